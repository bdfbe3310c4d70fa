"""The decision document's strict shape. Anything else the policy returns is an
error, and an error means BLOCK (never a guess at what the policy meant)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enforcer.errors import AeclError, MalformedDecision

Outcome = Literal["approve", "block", "escalate"]


class _PolicyAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    outcome: Outcome
    reason: str = Field(min_length=1)
    risk_score: float = Field(ge=0, le=1)
    gate: str = Field(min_length=1)
    rule: str = Field(min_length=1)
    risk_flags: list[str]
    risk_weights: dict[str, Annotated[float, Field(ge=0, le=1)]]
    approval_ttl_seconds: int = Field(ge=0)

    @field_validator("risk_weights", mode="before")
    @classmethod
    def _whole_weights_are_numbers(cls, v: object) -> object:
        # Rego prints a weight of 1 as an integer; strict mode wants a float.
        if isinstance(v, dict):
            return {k: float(w) if isinstance(w, int) and not isinstance(w, bool) and abs(w) <= 1 else w
                    for k, w in v.items()}
        return v


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    risk_score: float
    gate: str
    policy_revision: str
    decision_id: str
    risk_flags: tuple[str, ...] = ()
    approval_ttl_seconds: int = 0
    # The rule that decided and each raised flag's weight: the explanation.
    rule: str = ""
    risk_weights: dict[str, float] = field(default_factory=dict)
    # Set by the pipeline for agents in shadow mode: decided, not enforced.
    shadow: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # Set by blocked_by_error: the code of the PolicyError the call failed closed on.
    error_code: str = ""

    @property
    def failed_closed(self) -> bool:
        """Blocked because the policy gave no well-formed answer, not by a rule."""
        return bool(self.error_code)

    def explanation(self) -> dict[str, Any]:
        """The fields a reader sees (the RPC's Decision message, `aecl decide`),
        in this order; fresh containers, so the caller may keep or change them."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "risk_score": self.risk_score,
            "gate": self.gate,
            "policy_revision": self.policy_revision,
            "decision_id": self.decision_id,
            "risk_flags": list(self.risk_flags),
            "approval_ttl_seconds": self.approval_ttl_seconds,
            "rule": self.rule,
            "risk_weights": dict(self.risk_weights),
            "shadow": self.shadow,
        }


def parse_decision(raw: Any, *, revision: str, decision_id: str) -> Decision:
    if not isinstance(raw, dict):
        raise MalformedDecision(f"policy returned {type(raw).__name__}, expected an object")
    # Rego numbers may arrive as ints (0, 1); strict mode would reject them as floats.
    doc = dict(raw)
    if isinstance(doc.get("risk_score"), int) and not isinstance(doc.get("risk_score"), bool):
        if abs(doc["risk_score"]) > 1:
            raise MalformedDecision("policy decision field 'risk_score': out of range [0, 1]")
        doc["risk_score"] = float(doc["risk_score"])
    try:
        answer = _PolicyAnswer.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise MalformedDecision(f"policy decision field '{loc}': {first['msg']}") from None
    if not math.isfinite(answer.risk_score):
        raise MalformedDecision("policy decision field 'risk_score': not finite")
    if answer.outcome == "escalate" and answer.approval_ttl_seconds <= 0:
        raise MalformedDecision("policy decision field 'approval_ttl_seconds': escalation without an expiry")
    return Decision(
        outcome=answer.outcome,
        reason=answer.reason,
        risk_score=answer.risk_score,
        gate=answer.gate,
        policy_revision=revision,
        decision_id=decision_id,
        risk_flags=tuple(answer.risk_flags),
        approval_ttl_seconds=answer.approval_ttl_seconds,
        rule=answer.rule,
        risk_weights=dict(answer.risk_weights),
    )


def blocked_by_error(error: Exception, *, revision: str, decision_id: str) -> Decision:
    """The fail-closed decision: whatever went wrong, the call does not happen."""
    return Decision(
        outcome="block",
        reason=f"policy engine error, failing closed: {error}",
        risk_score=1.0,
        gate="engine",
        policy_revision=revision,
        decision_id=decision_id,
        rule="engine.error",
        error_code=error.code if isinstance(error, AeclError) else AeclError.code,
    )
