"""Crash safety: a service under load is SIGKILLed again and again. After each
restart the log verifies, and every answer a client received has its entry."""

from __future__ import annotations

import json
import signal
import threading
import time

import grpc

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.audit.keys import load_public_key
from enforcer.audit.verify import verify_file
from tests.auth_client import AgentAuth
from tests.conftest import Service, write_config

ROUNDS = 5


def load(address: str, auth: AgentAuth, task: str, acked: list[str], stop: threading.Event) -> None:
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.EnforcerServiceStub(grpc.intercept_channel(channel, auth))  # the task's token
    req = pb.DecideRequest(task_id=task, agent_id="finance_agent_v2", call=pb.ToolCall(name="read_invoice"))
    req.call.args.update({"invoice_id": "INV-1001"})
    while not stop.is_set():
        try:
            acked.append(stub.Decide(req, timeout=5).event_id)
        except grpc.RpcError:
            return  # the service died under us: that answer never arrived
    channel.close()


def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path):
    config = write_config(tmp_path)
    acked: list[str] = []
    for _ in range(ROUNDS):
        svc = Service(config)
        task = svc.stub.StartTask(pb.StartTaskRequest(agent_id="finance_agent_v2", declared_goal="read")).task_id
        stop = threading.Event()
        workers = [threading.Thread(target=load, args=(svc.address, svc.auth, task, acked, stop)) for _ in range(6)]
        for w in workers:
            w.start()
        time.sleep(0.6)
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait()
        stop.set()
        for w in workers:
            w.join()
        svc.channel.close()
        # Every restart re-reads the log: a torn tail is cut, the chain goes on.
        assert verify_file(svc.audit_path, [load_public_key(svc.pubkey)]) > 0
    logged = {json.loads(line)["record"]["event_id"] for line in svc.log_lines()}
    assert len(acked) > 50, "the load generator did not get going"
    missing = [e for e in acked if e not in logged]
    assert not missing, f"{len(missing)} acknowledged decisions are not in the log"
    # And the service comes back once more on the same files.
    final = Service(config)
    try:
        final.stub.StartTask(pb.StartTaskRequest(agent_id="finance_agent_v2", declared_goal="read"))
        assert verify_file(final.audit_path, [load_public_key(final.pubkey)]) == len(final.log_lines())
    finally:
        final.stop()
