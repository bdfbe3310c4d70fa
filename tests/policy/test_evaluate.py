"""evaluate -> parse -> fail closed, in one place; and the one list of the
fields a reader sees of a Decision."""

from __future__ import annotations

import logging

import pytest

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer.errors import EngineUnavailable, MalformedDecision
from enforcer.policy.decision import Decision, blocked_by_error, parse_decision
from enforcer.policy.evaluate import evaluate_decision
from enforcer.server.convert import decision_message

GOOD = {"outcome": "escalate", "reason": "needs a human", "risk_score": 0.7, "gate": "hitl", "rule": "hitl.route",
        "risk_flags": ["large_amount", "irreversible"], "risk_weights": {"large_amount": 0.5, "irreversible": 0.2},
        "approval_ttl_seconds": 3600}


class Engine:
    name, blocking = "stub", False

    def __init__(self, answer=None, error=None, revision="sha256:engine"):
        self.answer, self.error, self.revision = answer, error, revision
        self.inputs = []

    def evaluate(self, policy_input):
        self.inputs.append(policy_input)
        if self.error is not None:
            raise self.error
        return self.answer


def test_a_well_formed_answer_is_the_decision():
    engine = Engine(GOOD)
    d = evaluate_decision(engine, {"agent_id": "a"}, decision_id="dec_1")
    assert engine.inputs == [{"agent_id": "a"}]
    assert d == parse_decision(GOOD, revision="sha256:engine", decision_id="dec_1")
    assert not d.failed_closed and d.error_code == ""


def test_revision_defaults_to_the_engine_and_can_be_given():
    assert evaluate_decision(Engine(GOOD), {}, decision_id="d").policy_revision == "sha256:engine"
    assert evaluate_decision(Engine(GOOD), {}, decision_id="d", revision="sha256:other").policy_revision == "sha256:other"
    blocked = evaluate_decision(Engine(error=EngineUnavailable("down")), {}, decision_id="d", revision="sha256:other")
    assert blocked.policy_revision == "sha256:other"


@pytest.mark.parametrize("engine, code", [
    (Engine(error=EngineUnavailable("OPA at 127.0.0.1:8181 is unavailable")), "engine_unavailable"),
    (Engine(error=MalformedDecision("policy returned no decision (undefined)")), "malformed_decision"),
    (Engine({**GOOD, "outcome": "allow"}), "malformed_decision"),
    (Engine("approve"), "malformed_decision"),
])
def test_any_policy_error_fails_closed_and_is_logged(engine, code, caplog):
    with caplog.at_level(logging.ERROR, logger="enforcer.policy.evaluate"):
        d = evaluate_decision(engine, {}, decision_id="dec_42")
    assert d.outcome == "block" and d.gate == "engine" and d.rule == "engine.error"
    assert d.failed_closed and d.error_code == code and d.decision_id == "dec_42"
    assert "failing closed" in d.reason
    [record] = [r for r in caplog.records if r.name == "enforcer.policy.evaluate"]
    assert record.levelno == logging.ERROR and "dec_42" in record.getMessage()


def test_nothing_but_a_policy_error_is_caught():
    with pytest.raises(ZeroDivisionError):
        evaluate_decision(Engine(error=ZeroDivisionError()), {}, decision_id="d")


def test_blocked_by_a_foreign_exception_has_the_root_code():
    assert blocked_by_error(ValueError("x"), revision="r", decision_id="d").error_code == "internal"


def test_explanation_lists_what_a_reader_sees_in_a_fixed_order():
    d = parse_decision(GOOD, revision="sha256:x", decision_id="dec_1")
    out = d.explanation()
    assert list(out) == ["outcome", "reason", "risk_score", "gate", "policy_revision", "decision_id", "risk_flags",
                         "approval_ttl_seconds", "rule", "risk_weights", "shadow"]
    assert out["risk_flags"] == ["large_amount", "irreversible"] and out["shadow"] is False
    out["risk_flags"].append("x")
    out["risk_weights"]["x"] = 1.0
    assert d.risk_flags == ("large_amount", "irreversible") and "x" not in d.risk_weights


def test_the_rpc_message_carries_exactly_the_explanation():
    d = Decision(**{**parse_decision(GOOD, revision="sha256:x", decision_id="dec_1").__dict__, "shadow": True})
    msg = decision_message(d)
    assert set(out_field.name for out_field in pb.Decision.DESCRIPTOR.fields) == set(d.explanation())
    assert msg.outcome == pb.OUTCOME_ESCALATE and msg.shadow is True and msg.rule == "hitl.route"
    assert list(msg.risk_flags) == ["large_amount", "irreversible"]
    assert dict(msg.risk_weights) == pytest.approx({"large_amount": 0.5, "irreversible": 0.2})
    assert msg.approval_ttl_seconds == 3600 and msg.policy_revision == "sha256:x" and msg.decision_id == "dec_1"
