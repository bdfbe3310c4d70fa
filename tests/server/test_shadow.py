"""Shadow mode: the policy decides and logs, but only for agents so marked the
call proceeds; everyone else, and every engine failure, stays enforced."""

from __future__ import annotations

import json
import shutil

import pytest

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from tests.conftest import EXAMPLES, Service, write_config
from tests.server.test_acceptance import decide, execute, start


@pytest.fixture(scope="module")
def shadow_service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shadow")
    agents = tmp / "agents"
    shutil.copytree(EXAMPLES / "agents", agents)
    strict = (agents / "finance_agent_v2.yaml").read_text().replace(
        "agent_id: finance_agent_v2", "agent_id: strict_agent")
    (agents / "strict_agent.yaml").write_text(strict)
    svc = Service(write_config(tmp, agents_dir=str(agents),
                               policy={"shadow_agents": ["finance_agent_v2"]}))
    yield svc
    svc.stop()


def records(svc):
    return [json.loads(line)["record"] for line in svc.log_lines()]


def test_shadow_agent_runs_a_call_enforce_mode_would_block(shadow_service):
    # modify_iam_policy: on the agent's block list, and a tool that needs no
    # connector (delete_record now goes through the records connector, which
    # reaches nothing outside a test that starts the example world).
    svc = shadow_service
    task = start(svc, goal="change the IAM policy")
    r = execute(svc, task, "modify_iam_policy", {"principal": "svc-reports", "grant": ["reports:read"]})
    assert r.decision.outcome == pb.OUTCOME_BLOCK and r.decision.shadow
    assert r.decision.rule == "allowlist.blocked"
    assert r.status == pb.EXECUTION_STATUS_SUCCEEDED, r.error
    assert r.sandbox_id and r.output["granted"] == ["reports:read"]
    decision = next(rec for rec in records(svc) if rec.get("decision_id") == r.decision.decision_id
                    and rec["kind"] == "decision")
    assert decision["shadow"] is True and decision["enforced"] is False
    assert decision["outcome"] == "block" and "block list" in decision["reason"]


def test_shadow_escalation_runs_without_an_approval(shadow_service):
    svc = shadow_service
    task = start(svc)
    r = execute(svc, task, "transfer_funds", {"vendor": "V-221", "amount": 100000}, untrusted=True)
    assert r.decision.outcome == pb.OUTCOME_ESCALATE and r.decision.shadow
    # It ran, with no approval: the tool reached the payments connector. This
    # config points the connector at a closed port (no example world here),
    # so the transfer itself fails, truthfully, and is logged as run.
    assert not r.approval_id and r.sandbox_id
    assert r.status == pb.EXECUTION_STATUS_FAILED
    assert "POST http://payments/transfers: HTTP 502" in r.error and "upstream unreachable" in r.error
    mine = [rec for rec in records(svc) if rec.get("sandbox_id") == r.sandbox_id]
    assert [(rec["kind"], rec.get("connector")) for rec in mine] == [("connector_request", "payments"),
                                                                     ("execution", None)]
    assert mine[1]["outcome"] == "failed" and mine[1]["decision_id"] == r.decision.decision_id


def test_agent_not_in_shadow_is_still_enforced(shadow_service):
    svc = shadow_service
    task = start(svc, agent="strict_agent", goal="delete record")
    r = execute(svc, task, "delete_record", {"record_id": "INV-1001"}, agent="strict_agent")
    assert r.status == pb.EXECUTION_STATUS_BLOCKED and not r.decision.shadow and not r.sandbox_id


def test_decide_marks_shadow_but_changes_nothing(shadow_service):
    d = decide(shadow_service, start(shadow_service), "delete_record", {"record_id": "x"})
    assert d.outcome == pb.OUTCOME_BLOCK and d.shadow


def test_engine_failure_blocks_even_in_shadow_mode(tmp_path):
    from tests.conftest import free_port

    svc = Service(write_config(tmp_path, policy={"mode": "shadow", "engine": "opa",
                                                 "opa": {"port": free_port(), "timeout_s": 0.3}}))
    try:
        task = start(svc)
        r = execute(svc, task, "read_invoice", {"invoice_id": "INV-1001"})
        assert r.status == pb.EXECUTION_STATUS_BLOCKED and not r.decision.shadow
        assert "unavailable" in r.decision.reason
        assert "SHADOW MODE" in svc.stderr_path.read_text()
    finally:
        svc.stop()
