"""Faults a hostile or unlucky client can cause, against a real service:
cancelled calls, impossible deadlines, a database that breaks while the
service runs, and a load test mixing them."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from tests.conftest import REPO, Service, write_config
from tests.server.test_acceptance import request, start

AGENT = "finance_agent_v2"


@pytest.fixture
def svc(tmp_path):
    s = Service(write_config(tmp_path))
    yield s
    s.stop()


def health(svc) -> int:
    stub = health_pb2_grpc.HealthStub(svc.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def records(svc) -> list[dict]:
    return [json.loads(line)["record"] for line in svc.log_lines()]


def verify(svc) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", "verify", "--log", str(svc.audit_path),
                           "--pubkey", str(svc.pubkey)], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_calls_cancelled_by_impossible_deadlines_never_stop_the_service(svc):
    """Decides with deadlines under 2 ms used to cancel the handler while its
    append was in flight, and the cancellation killed the audit writer."""
    task = start(svc, goal="read invoices")
    req = request("Decide", task, "read_invoice", {"invoice_id": "INV-1001"})
    codes: list[grpc.StatusCode] = []

    def storm(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            try:
                svc.stub.Decide(req, timeout=rng.uniform(0.0005, 0.002))
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
    threads = [threading.Thread(target=storm, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes  # the storm did cancel calls
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    # Still answering, still healthy, for a second or more.
    for _ in range(20):
        assert svc.stub.Decide(req, timeout=10).decision.outcome == pb.OUTCOME_APPROVE
        time.sleep(0.05)
    assert health(svc) == health_pb2.HealthCheckResponse.SERVING
    svc.stop()
    assert records(svc)[-1]["kind"] == "checkpoint"  # written at shutdown: the writer lived
    assert verify(svc).returncode == 0


def test_a_state_database_broken_while_running_is_refused_logged_and_not_serving(svc, tmp_path):
    task = start(svc, goal="read invoices")
    # The database is overwritten in place while the service runs (a disk
    # fault, a stray process): the same files, garbage inside.
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        path = tmp_path / name
        if path.exists():
            size = path.stat().st_size
            with open(path, "r+b") as f:
                f.write(b"garbage " * (size // 8 + 1))
    with pytest.raises(grpc.RpcError) as e:
        svc.stub.Execute(request("Execute", task, "read_invoice", {"invoice_id": "INV-1001"}), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "state database" in e.value.details()
    rejected = [r for r in records(svc) if r["kind"] == "rejected"]
    assert rejected and rejected[-1]["error_code"] == "store_unavailable"
    deadline = time.monotonic() + 10
    while health(svc) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, "health still SERVING over a broken database"
        time.sleep(0.05)


def test_load_with_short_deadlines_and_cancellations_loses_nothing(svc):
    """8 callers for 10 s; a quarter of them with deadlines between 0.5 and
    5 ms, some cancelling mid-call. Afterwards the service answers, every
    acknowledged decision is in the log exactly once, the log verifies and
    the shutdown checkpoint is written."""
    task = start(svc, goal="read invoices")
    req = request("Decide", task, "read_invoice", {"invoice_id": "INV-1001"})
    acked: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 10

    def caller(i: int) -> None:
        rng = random.Random(i)
        short = i % 4 == 0
        while time.monotonic() < stop_at:
            try:
                if short:
                    r = svc.stub.Decide(req, timeout=rng.uniform(0.0005, 0.005))
                elif rng.random() < 0.2:
                    fut = svc.stub.Decide.future(req, timeout=10)
                    time.sleep(rng.uniform(0, 0.002))
                    fut.cancel()
                    r = fut.result() if not fut.cancelled() else None
                else:
                    r = svc.stub.Decide(req, timeout=10)
            except (grpc.RpcError, grpc.FutureCancelledError):
                continue
            if r is not None:
                with lock:
                    acked.append(r.event_id)
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acked) > 100
    assert svc.stub.Decide(req, timeout=10).decision.outcome == pb.OUTCOME_APPROVE
    svc.stop()
    logged = [r["event_id"] for r in records(svc)]
    assert all(logged.count(e) == 1 for e in set(acked)) and set(acked) <= set(logged)
    assert len(logged) == len(set(logged))
    assert records(svc)[-1]["kind"] == "checkpoint"
    assert verify(svc).returncode == 0
