"""The decision document's strict shape: anything off-shape is an error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enforcer.errors import MalformedDecision
from enforcer.policy.decision import parse_decision

GOOD = {"outcome": "approve", "reason": "ok", "risk_score": 0.3, "gate": "risk", "rule": "risk.within_threshold",
        "risk_flags": ["bulk_operation"], "risk_weights": {"bulk_operation": 0.3}, "approval_ttl_seconds": 0}


def parse(doc):
    return parse_decision(doc, revision="sha256:x", decision_id="dec_1")


def test_well_formed_document_parses():
    d = parse(GOOD)
    assert d.outcome == "approve" and d.risk_score == 0.3 and d.policy_revision == "sha256:x"
    assert d.rule == "risk.within_threshold" and d.risk_weights == {"bulk_operation": 0.3}


def test_whole_number_weight_is_a_weight():
    assert parse({**GOOD, "risk_weights": {"large_amount": 1}}).risk_weights == {"large_amount": 1.0}


@pytest.mark.parametrize(
    "doc",
    [
        None, [], "approve", True, {},
        {**GOOD, "outcome": "allow"},
        {**GOOD, "outcome": "APPROVE"},
        {**GOOD, "risk_score": 1.5},
        {**GOOD, "risk_score": -0.1},
        {**GOOD, "risk_score": "0.3"},
        {**GOOD, "risk_score": 10**400},  # beyond float range: must not escape as OverflowError
        {**GOOD, "reason": ""},
        {**GOOD, "extra": 1},
        {k: v for k, v in GOOD.items() if k != "reason"},
        {**GOOD, "outcome": "escalate", "approval_ttl_seconds": 0},
        {**GOOD, "risk_flags": "irreversible"},
        {**GOOD, "rule": ""},
        {k: v for k, v in GOOD.items() if k != "rule"},
        {**GOOD, "risk_weights": {"bulk_operation": 2}},
        {**GOOD, "risk_weights": ["bulk_operation"]},
    ],
)
def test_malformed_documents_are_refused(doc):
    with pytest.raises(MalformedDecision):
        parse(doc)


@given(st.dictionaries(st.sampled_from(list(GOOD) + ["x"]), st.none() | st.booleans() | st.integers() | st.text(max_size=5)))
def test_random_documents_never_approve_by_accident(doc):
    try:
        d = parse(doc)
    except MalformedDecision:
        return
    assert d.outcome in {"approve", "block", "escalate"} and doc["outcome"] == d.outcome
