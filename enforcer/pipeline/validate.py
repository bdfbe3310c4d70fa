"""Checks on untrusted request fields, before anything else happens.

Each failure names the field (in the proto's terms) so a client in any
language can tell what to fix.
"""

from __future__ import annotations

import re

from enforcer.config import LimitsConfig
from enforcer.errors import InvalidRequest
from enforcer.manifests import ToolRegistry, ToolSpec
from enforcer.pipeline.request import CallRequest, StartTaskRequest

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
MAX_GOAL_BYTES = 4096
MAX_DECLARED_ACTIONS = 256


def require_id(field: str, value: str) -> None:
    if not value:
        raise InvalidRequest(field, "is required")
    if not ID_RE.match(value):
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
    spec = registry.get(req.tool)
    if spec is None:
        raise InvalidRequest("call.name", f"unknown tool '{req.tool[:128]}'")
    if len(req.triggering_input.encode()) > limits.max_triggering_input_bytes:
        raise InvalidRequest(
            "context.triggering_input", f"longer than {limits.max_triggering_input_bytes} bytes"
        )
    return spec
