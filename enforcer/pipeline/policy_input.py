"""The policy input document: everything Rego decides on, in one place.

Risk properties come from the operator's registry entry, never from the
request; the agent's args and context are passed as untrusted data.
"""

from __future__ import annotations

from typing import Any

from enforcer.manifests import ToolSpec
from enforcer.pipeline.request import CallRequest
from enforcer.state.store import Task


def build_policy_input(req: CallRequest, tool: ToolSpec, task: Task, now: float) -> dict[str, Any]:
    return {
        "agent_id": req.agent_id,
        "action": {"name": req.tool, "args": req.args},
        "tool": {
            "access": tool.access,
            "irreversible": tool.irreversible,
            "affects_production": tool.affects_production,
            "bulk_operation": tool.bulk_operation,
            "amount_arg": tool.amount_arg,
            "compensating_action": tool.compensating_action,
        },
        "context": {
            "untrusted_input_source": req.untrusted_input_source,
            "triggering_input": req.triggering_input,
        },
        "task": {
            "task_id": task.task_id,
            "declared_goal": task.declared_goal,
            "declared_actions": list(task.declared_actions),
            "calls_so_far": task.calls_so_far,
            "started_at": task.started_at,
            "expires_at": task.expires_at,
        },
        "now": now,
    }
