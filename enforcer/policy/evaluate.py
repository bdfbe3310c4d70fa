"""Evaluate, parse, fail closed: the one way a policy input becomes a Decision.

The service, `aecl decide` and `aecl policy replay` all decide through here,
so an engine error or an answer outside the decision schema is a BLOCK in
every one of them, never a guess and never an exception.
"""

from __future__ import annotations

import logging
from typing import Any

from enforcer.errors import PolicyError
from enforcer.policy.decision import Decision, blocked_by_error, parse_decision

log = logging.getLogger(__name__)


def evaluate_decision(engine: Any, policy_input: dict[str, Any], *, decision_id: str,
                      revision: str | None = None) -> Decision:
    """The engine's decision on `policy_input`, checked against the decision
    schema. Any PolicyError (engine down, slow, malformed answer) becomes the
    fail-closed BLOCK (Decision.failed_closed) and is logged at ERROR; nothing
    else is caught. Synchronous: run it off the event loop for a blocking engine.
    `revision` defaults to the engine's own."""
    revision = engine.revision if revision is None else revision
    try:
        return parse_decision(engine.evaluate(policy_input), revision=revision, decision_id=decision_id)
    except PolicyError as e:
        log.error("decision %s blocked: %s", decision_id, e)
        return blocked_by_error(e, revision=revision, decision_id=decision_id)
