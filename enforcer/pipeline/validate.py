"""Checks on untrusted request fields, before anything else happens.

Each failure names the field (in the proto's terms) so a client in any
language can tell what to fix.
"""

from __future__ import annotations

import re
from typing import Any

from enforcer.config import LimitsConfig
from enforcer.errors import InvalidRequest
from enforcer.manifests import NAME_RE, ToolRegistry, ToolSpec
from enforcer.pipeline.request import CallRequest, StartTaskRequest

# \A...\Z and fullmatch, never `$`: in Python's re `$` also matches before a
# final "\n", and a newline in an id once made rego-cpp print invalid JSON.
ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
MAX_GOAL_BYTES = 4096
MAX_DECLARED_ACTIONS = 256


def require_id(field: str, value: str) -> None:
    if not value:
        raise InvalidRequest(field, "is required")
    if not ID_RE.fullmatch(value):
        raise InvalidRequest(field, f"must match {ID_RE.pattern}")


def validate_start_task(req: StartTaskRequest) -> None:
    require_id("agent_id", req.agent_id)
    if len(req.declared_goal.encode()) > MAX_GOAL_BYTES:
        raise InvalidRequest("declared_goal", f"longer than {MAX_GOAL_BYTES} bytes")
    if len(req.declared_actions) > MAX_DECLARED_ACTIONS:
        raise InvalidRequest("declared_actions", f"more than {MAX_DECLARED_ACTIONS} entries")
    for i, action in enumerate(req.declared_actions):
        require_id(f"declared_actions[{i}]", action)


def validate_call(req: CallRequest, registry: ToolRegistry, limits: LimitsConfig) -> ToolSpec:
    """Returns the registry entry of the called tool. Args were already bounded
    (depth, finite numbers, size) when they were converted from the wire."""
    require_id("task_id", req.task_id)
    require_id("agent_id", req.agent_id)
    if not req.tool:
        raise InvalidRequest("call.name", "is required")
    if not NAME_RE.fullmatch(req.tool):  # no registered name looks otherwise; never echo it
        raise InvalidRequest("call.name", f"must match {NAME_RE.pattern}")
    spec = registry.get(req.tool)
    if spec is None:
        raise InvalidRequest("call.name", f"unknown tool '{req.tool}'")
    if len(req.triggering_input.encode()) > limits.max_triggering_input_bytes:
        raise InvalidRequest(
            "context.triggering_input", f"longer than {limits.max_triggering_input_bytes} bytes"
        )
    validate_declared_args(req.args, spec)
    return spec


def validate_declared_args(args: dict[str, Any], spec: ToolSpec) -> None:
    """The arguments the registry gives a meaning to have that meaning's type.

    An amount is never negative: a transfer of a negative amount is a reversed
    transfer, which must be its own tool. An amount that is missing or not a
    number is left to the policy, which counts it as large (rego/aecl/risk.rego;
    tests/policy/test_engines.py checks both engines). A path is a string.
    """
    if spec.amount_arg is not None:
        amount = args.get(spec.amount_arg)
        if isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount < 0:
            raise InvalidRequest(f"call.args.{spec.amount_arg}", "must not be negative")
    for name in spec.path_args:
        if name in args and not isinstance(args[name], str):
            raise InvalidRequest(f"call.args.{name}", f"must be a string (the registry declares it a path), "
                                 f"not {_kind(args[name])}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    return "an object" if isinstance(value, dict) else "a list"
