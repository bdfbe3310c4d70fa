"""Hot reload against a running service: a broken candidate never replaces the
running policy, a good one takes over with no lost or failed call."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
import yaml

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from tests.conftest import EXAMPLES, REPO, Service, write_config
from tests.server.test_acceptance import decide, start

MANIFEST = "finance_agent_v2.yaml"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An operator's editable copy of the policy, manifests and registry."""
    shutil.copytree(REPO / "rego", tmp_path / "rego")
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("demo.py"))
    return tmp_path


def serve(workspace: Path, *, watch: bool = False, **policy) -> Service:
    return Service(write_config(
        workspace / "svc",
        agents_dir=str(workspace / "examples/agents"),
        tool_registry=str(workspace / "examples/tools.yaml"),
        policy={"rego_dir": str(workspace / "rego"),
                "reload": {"watch": watch, "interval_s": 0.2}, **policy},
    ))


def admin(svc: Service) -> pb_grpc.AdminServiceStub:
    """AdminService as the administrator (its API key as the bearer)."""
    return svc.admin


def set_threshold(workspace: Path, value: float) -> None:
    path = workspace / "examples/agents" / MANIFEST
    doc = yaml.safe_load(path.read_text())
    doc["auto_approve_threshold"] = value
    path.write_text(yaml.safe_dump(doc))


def reload_entries(svc: Service) -> list[dict]:
    return [r for r in (json.loads(line)["record"] for line in svc.log_lines()) if r["kind"] == "policy_reload"]


def test_broken_rego_is_rejected_naming_the_file_and_the_old_policy_stays(workspace):
    svc = serve(workspace)
    try:
        task = start(svc)
        before = decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"})
        (workspace / "rego/aecl/risk.rego").write_text(
            (workspace / "rego/aecl/risk.rego").read_text() + "\nbroken := {{{\n")
        r = admin(svc).ReloadPolicy(pb.ReloadPolicyRequest())
        assert not r.applied
        assert "risk.rego" in r.message and r.new_revision == before.policy_revision
        after = decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"})
        assert after.outcome == pb.OUTCOME_APPROVE and after.policy_revision == before.policy_revision
        [entry] = reload_entries(svc)
        assert entry["outcome"] == "rejected" and "risk.rego" in entry["reason"]
        assert entry["principal"]["kind"] == "admin" and entry["principal"]["id"] == "admin"
    finally:
        svc.stop()


def test_manifest_with_a_wrong_type_is_rejected_naming_file_and_field(workspace):
    svc = serve(workspace)
    try:
        task = start(svc)
        before = decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"}).policy_revision
        path = workspace / "examples/agents" / MANIFEST
        path.write_text(path.read_text().replace("max_tool_calls_per_run: 50", "max_tool_calls_per_run: lots"))
        r = admin(svc).ReloadPolicy(pb.ReloadPolicyRequest())
        assert not r.applied
        assert MANIFEST in r.message and "max_tool_calls_per_run" in r.message
        assert decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"}).policy_revision == before
        status = admin(svc).GetPolicyStatus(pb.GetPolicyStatusRequest())
        assert status.policy_revision == before and not status.last_reload.applied
    finally:
        svc.stop()


def test_candidate_failing_its_own_tests_is_rejected(workspace):
    svc = serve(workspace)
    try:
        (workspace / "rego/aecl/limits_test.rego").write_text(
            (workspace / "rego/aecl/limits_test.rego").read_text() + "\ntest_deny_always_fails if {\n\tfalse\n}\n")
        r = admin(svc).ReloadPolicy(pb.ReloadPolicyRequest())
        assert not r.applied and "test_deny_always_fails" in r.message
    finally:
        svc.stop()


def test_threshold_change_swaps_under_load_with_no_failed_call(workspace):
    svc = serve(workspace)
    try:
        task = start(svc)
        args = {"vendor": "V-221", "amount": 10}
        first = decide(svc, task, "generate_payment_report", {"vendor_id": "V-1"})
        assert first.outcome == pb.OUTCOME_BLOCK  # the goal does not name it
        task = start(svc, goal="generate payment report and transfer funds")
        base = decide(svc, task, "generate_payment_report", {"vendor_id": "V-1"})
        assert base.outcome == pb.OUTCOME_APPROVE

        results: list[tuple[int, str]] = []
        errors: list[Exception] = []
        stop = threading.Event()

        def drive():
            # A channel of its own, carrying the task token the service issued.
            channel = grpc.insecure_channel(svc.address)
            stub = pb_grpc.EnforcerServiceStub(grpc.intercept_channel(channel, svc.auth))
            while not stop.is_set():
                req = pb.DecideRequest(task_id=task, agent_id="finance_agent_v2",
                                       call=pb.ToolCall(name="generate_payment_report"))
                req.call.args.update({"vendor_id": "V-1"})
                try:
                    d = stub.Decide(req).decision
                    results.append((d.outcome, d.policy_revision))
                except grpc.RpcError as e:
                    errors.append(e)
            channel.close()

        drivers = [threading.Thread(target=drive) for _ in range(3)]
        for t in drivers:
            t.start()
        time.sleep(0.3)
        # An agent threshold of 0 escalates every call with any risk... and a
        # write to production (added to the registry) now carries risk.
        reg = workspace / "examples/tools.yaml"
        reg.write_text(reg.read_text().replace(
            "    command: [/usr/bin/python3, -I, /opt/aecl/tools/generate_payment_report.py]\n    access: write\n",
            "    command: [/usr/bin/python3, -I, /opt/aecl/tools/generate_payment_report.py]\n    access: write\n"
            "    affects_production: true\n"))
        set_threshold(workspace, 0.1)
        r = admin(svc).ReloadPolicy(pb.ReloadPolicyRequest())
        time.sleep(0.3)
        stop.set()
        for t in drivers:
            t.join()
        assert r.applied, r.message
        assert r.old_revision == base.policy_revision and r.new_revision != base.policy_revision
        assert not errors
        assert {rev for _, rev in results} <= {r.old_revision, r.new_revision}
        # Each revision decided consistently: the old one approves, the new one escalates.
        assert {o for o, rev in results if rev == r.old_revision} == {pb.OUTCOME_APPROVE}
        assert {o for o, rev in results if rev == r.new_revision} == {pb.OUTCOME_ESCALATE}
        after = decide(svc, task, "generate_payment_report", {"vendor_id": "V-1"})
        assert after.outcome == pb.OUTCOME_ESCALATE and after.policy_revision == r.new_revision
        assert after.rule == "risk.over_threshold" and dict(after.risk_weights) == {"affects_production": 0.4}
        del args
    finally:
        svc.stop()


def test_sighup_and_the_watcher_reload(workspace):
    svc = serve(workspace, watch=True)
    try:
        task = start(svc, goal="transfer funds")
        old = decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"}).policy_revision
        set_threshold(workspace, 0.5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            new = decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"}).policy_revision
            if new != old:
                break
            time.sleep(0.1)
        assert new != old, "the watcher did not pick up the manifest change"
        set_threshold(workspace, 0.6)  # back to the original revision, by SIGHUP this time
        svc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"}).policy_revision == old:
                break
            time.sleep(0.1)
        assert decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"}).policy_revision == old
        assert all(e["outcome"] == "applied" for e in reload_entries(svc))
        # Not an administrator's call: the watcher and SIGHUP reload as the service.
        assert all(e["principal"]["kind"] == "service" for e in reload_entries(svc))
        assert len(reload_entries(svc)) >= 2
    finally:
        svc.stop()
