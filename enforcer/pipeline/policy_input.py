"""The policy input document: everything Rego decides on, in one place.

Risk properties come from the operator's registry entry, never from the
request; the agent's args and context are passed as untrusted data, exactly
as sent. Beside them, `paths` holds the normalised form of each path argument
the registry declares (`path_args`), so a policy never has to undo
`..%2f` or `//` itself. For a tool with a path_root (an MCP server's
workspace) each entry also says whether the path resolves inside that root.

Beside the call itself, the input carries what the task already did:
`task.history`, its earlier calls that reached a decision (Execute only; a
Decide adds none), oldest first, each {tool, outcome, amount, resource, at}.
At most the last MAX_HISTORY calls are carried; `task.history_truncated` is
true when older ones were left out (the shipped history rules then block,
rather than decide on part of the history). `resource` is the value of the
tool's resource_arg in this call, as a string (or null), and
`task.declared_resources` the resources the task declared at StartTask.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from enforcer.manifests import ToolSpec
from enforcer.pipeline.request import CallRequest
from enforcer.state.store import Call, Task

# Percent-decoding stops after this many rounds; a value that still changes
# is reported as `still_encoded` (the shipped policy blocks it).
MAX_DECODE_ROUNDS = 8
# The most earlier calls of a task the input carries (task.history).
MAX_HISTORY = 200


def _fold(path: str) -> str:
    """posixpath.normpath, with a leading "//" folded to "/" as well."""
    normalized = posixpath.normpath(path)
    return "/" + normalized.lstrip("/") if normalized.startswith("/") else normalized


def normalize_path(raw: str, root: str | None = None) -> dict[str, Any]:
    """The lexical, normalised form of one path argument, with flags.

    Percent-decoded until stable (at most MAX_DECODE_ROUNDS rounds; invalid
    UTF-8 becomes U+FFFD), `\\` kept as an ordinary character (the sandbox is
    POSIX), then `.` and `..` resolved and duplicate slashes folded without
    touching the file system: symlinks are the sandbox's business, not this.
    `escapes_root` is true when a relative path climbs above its start.

    `root` is the tool's path_root (an absolute directory) or None. With a
    root, `resolved` is the path as the tool sees it: an absolute path as
    it is, a relative one taken from the root, normalised the same way; and
    `inside_root` says whether it is the root or below it. Without a root,
    `resolved` is None and `inside_root` says whether the path stays below
    its own start (relative, not climbing above it).
    """
    decoded, still_encoded = raw, True
    for _ in range(MAX_DECODE_ROUNDS):
        step = unquote(decoded, errors="replace")
        if step == decoded:
            still_encoded = False
            break
        decoded = step
    else:
        still_encoded = unquote(decoded, errors="replace") != decoded
    normalized = _fold(decoded)
    absolute = normalized.startswith("/")
    escapes = not absolute and (normalized == ".." or normalized.startswith("../"))
    resolved: str | None = None
    if root is None:
        inside = not absolute and not escapes
    else:
        base = _fold(root)
        # posixpath.join drops `base` when `decoded` is absolute, as wanted.
        resolved = _fold(posixpath.join(base, decoded))
        inside = resolved == base or resolved.startswith(base.rstrip("/") + "/")
    return {
        "raw": raw,
        "normalized": normalized,
        "absolute": absolute,
        "escapes_root": escapes,
        "had_encoding": decoded != raw,
        "still_encoded": still_encoded,
        "root": root,
        "resolved": resolved,
        "inside_root": inside,
    }


def path_arguments(args: dict[str, Any], tool: ToolSpec) -> dict[str, dict[str, Any]]:
    """input.paths: the declared path arguments that were sent, normalised
    (against the tool's path_root, when it has one). Validation refused a
    declared path argument that is not a string."""
    return {name: normalize_path(args[name], tool.path_root) for name in tool.path_args
            if isinstance(args.get(name), str)}


def call_amount(args: dict[str, Any], tool: ToolSpec) -> int | float | None:
    """The value of the tool's amount_arg when it is a (finite) number."""
    if tool.amount_arg is None:
        return None
    value = args.get(tool.amount_arg)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if isinstance(value, int) or math.isfinite(value) else None


def call_resource(args: dict[str, Any], tool: ToolSpec) -> str | None:
    """The value of the tool's resource_arg as a string, when it was sent
    (validation refused anything but a bounded string or integer)."""
    if tool.resource_arg is None or tool.resource_arg not in args:
        return None
    value = args[tool.resource_arg]
    return value if isinstance(value, str) else str(value)


def history_entry(call: Call) -> dict[str, Any]:
    return {"tool": call.tool, "outcome": call.outcome, "amount": call.amount, "resource": call.resource,
            "at": call.at}


def build_policy_input(req: CallRequest, tool: ToolSpec, task: Task, now: float,
                       history: Sequence[Call] = (), *, history_truncated: bool = False) -> dict[str, Any]:
    """`history`: the task's earlier calls, oldest first (at most the last
    MAX_HISTORY are carried; more, or `history_truncated`, sets
    task.history_truncated)."""
    p = req.principal
    truncated = history_truncated or len(history) > MAX_HISTORY
    carried = list(history)[-MAX_HISTORY:]
    return {
        "agent_id": req.agent_id,
        # Who proved to be calling (authentication), or null for an
        # in-process caller; Rego may decide on it (rego/aecl/identity.rego).
        "principal": None if p is None else {"kind": p.kind, "id": p.id},
        "action": {"name": req.tool, "args": req.args},
        "tool": {
            "access": tool.access,
            "irreversible": tool.irreversible,
            "affects_production": tool.affects_production,
            "bulk_operation": tool.bulk_operation,
            "amount_arg": tool.amount_arg,
            "compensating_action": tool.compensating_action,
            "path_args": list(tool.path_args),
            # The directory every declared path must lie in, or null.
            "path_root": tool.path_root,
            "resource_arg": tool.resource_arg,
            "connectors": list(tool.connectors),
        },
        "paths": path_arguments(req.args, tool),
        # The resource this call touches (the tool's resource_arg), or null.
        "resource": call_resource(req.args, tool),
        "context": {
            "untrusted_input_source": req.untrusted_input_source,
            "triggering_input": req.triggering_input,
        },
        "task": {
            "task_id": task.task_id,
            "declared_goal": task.declared_goal,
            "declared_actions": list(task.declared_actions),
            "declared_resources": list(task.declared_resources),
            "calls_so_far": task.calls_so_far,
            "history": [history_entry(c) for c in carried],
            "history_truncated": truncated,
            "started_at": task.started_at,
            "expires_at": task.expires_at,
        },
        "now": now,
    }
