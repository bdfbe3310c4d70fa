"""Fail closed over the wire: a stopped OPA sidecar or an off-shape policy
blocks every call, says why, runs nothing and logs each decision."""

from __future__ import annotations

import json
import shutil

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer.policy.opa import find_opa_binary
from tests.conftest import REPO, Service, free_port, write_config
from tests.server.test_acceptance import decide, execute, start


def records(service):
    return [json.loads(line)["record"] for line in service.log_lines()]


def test_stopped_opa_blocks_every_call_and_logs_each(tmp_path):
    port = free_port()  # nothing listens here: the sidecar is down
    svc = Service(write_config(tmp_path, policy={"engine": "opa", "opa": {"port": port, "timeout_s": 0.5}}))
    try:
        task = start(svc)
        d = decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"})
        assert d.outcome == pb.OUTCOME_BLOCK
        assert "unavailable" in d.reason
        r = execute(svc, task, "read_invoice", {"invoice_id": "INV-1001"})
        assert r.status == pb.EXECUTION_STATUS_BLOCKED and r.decision.outcome == pb.OUTCOME_BLOCK
        assert not r.sandbox_id  # nothing ran
        logged = [rec for rec in records(svc) if rec["kind"] == "decision"]
        assert len(logged) == 2
        assert all(rec["outcome"] == "block" and "unavailable" in rec["reason"] for rec in logged)
        assert not [rec for rec in records(svc) if rec["kind"] == "execution"]
    finally:
        svc.stop()


def test_supervised_opa_decides_like_the_embedded_engine(tmp_path):
    find_opa_binary()  # fails loudly if setup did not build OPA
    svc = Service(write_config(tmp_path, policy={"engine": "opa",
                                                 "opa": {"port": free_port(), "supervise": True}}))
    try:
        task = start(svc)
        assert decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"}).outcome == pb.OUTCOME_APPROVE
        assert decide(svc, task, "delete_record", {"record_id": "r"}).outcome == pb.OUTCOME_BLOCK
        d = decide(svc, task, "transfer_funds", {"vendor": "V-221", "amount": 100000}, untrusted=True)
        assert d.outcome == pb.OUTCOME_ESCALATE and d.risk_score >= 0.7
    finally:
        svc.stop()


def test_malformed_policy_blocks_in_the_service(tmp_path):
    rego = tmp_path / "rego"
    shutil.copytree(REPO / "rego", rego)
    (rego / "aecl" / "main.rego").write_text(
        'package aecl.main\n\nimport rego.v1\n\ndecision := {"outcome": "approve", "note": "no reason"}\n'
    )
    svc = Service(write_config(tmp_path, policy={"rego_dir": str(rego)}))
    try:
        task = start(svc)
        d = decide(svc, task, "read_invoice", {"invoice_id": "INV-1001"})
        assert d.outcome == pb.OUTCOME_BLOCK
        assert "failing closed" in d.reason
        r = execute(svc, task, "read_invoice", {"invoice_id": "INV-1001"})
        assert r.status == pb.EXECUTION_STATUS_BLOCKED and not r.sandbox_id
        assert [rec["outcome"] for rec in records(svc) if rec["kind"] == "decision"] == ["block", "block"]
    finally:
        svc.stop()


def test_sandbox_that_cannot_start_is_a_logged_failure(tmp_path):
    bwrap = tmp_path / "bwrap"
    shutil.copy2(shutil.which("bwrap"), bwrap)
    svc = Service(write_config(tmp_path, sandbox={"bwrap": str(bwrap)}))
    try:
        bwrap.unlink()  # bubblewrap disappears after startup
        task = start(svc)
        r = execute(svc, task, "read_invoice", {"invoice_id": "INV-1001"})
        assert r.decision.outcome == pb.OUTCOME_APPROVE
        assert r.status == pb.EXECUTION_STATUS_FAILED
        assert "sandbox could not start" in r.error
        kinds = [(rec["kind"], rec["outcome"]) for rec in records(svc)]
        assert kinds[-2:] == [("decision", "approve"), ("execution", "failed")]
    finally:
        svc.stop()
