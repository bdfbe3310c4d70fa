"""Reading what a tool printed: only a clean exit with one JSON object on
stdout, no deeper than MAX_OUTPUT_DEPTH, is success; anything else is a clear
failure with the reason. Pure: no I/O.

Why a depth bound: the output goes back to the caller as a
google.protobuf.Struct, and a standard protobuf decoder refuses messages
nested past 100 levels (each JSON level is about three protobuf levels), and
Python's json module raises RecursionError on very deep input. Either would
otherwise turn a tool's output into an RPC error with no execution entry.
"""

from __future__ import annotations

import json
from typing import Any

from enforcer.sandbox.runner import SandboxResult

MAX_OUTPUT_DEPTH = 32
_STDERR_TAIL = 512


def interpret_result(result: SandboxResult) -> tuple[str, dict[str, Any] | None, str]:
    """(status, output, error) of a sandbox run."""
    if "shutdown" in result.limits_hit:
        return "failed", None, "interrupted: the service shut down and killed the sandbox"
    if result.timed_out:
        return "failed", None, "timeout: the tool ran past its time limit and was killed with its children"
    if result.output_truncated:
        return "failed", None, "the tool's output exceeded the output cap and was cut"
    if result.exit_code != 0:
        how = f"exit status {result.exit_code}" if result.exit_code is not None else f"signal {result.signal}"
        tail = result.stderr[-_STDERR_TAIL:].decode(errors="replace").strip()
        return "failed", None, f"the tool failed with {how}" + (f": {tail}" if tail else "")
    try:
        output = json.loads(result.stdout, parse_constant=_reject_constant)
    except RecursionError:
        return "failed", None, f"the tool's output is nested deeper than {MAX_OUTPUT_DEPTH} levels"
    except ValueError as e:
        return "failed", None, f"the tool's output is not JSON: {e}"
    if not isinstance(output, dict):
        return "failed", None, f"the tool's output is a JSON {type(output).__name__}, expected an object"
    if depth(output) > MAX_OUTPUT_DEPTH:
        return "failed", None, f"the tool's output is nested deeper than {MAX_OUTPUT_DEPTH} levels"
    return "succeeded", output, ""


def depth(value: Any) -> int:
    """Nesting depth of a JSON value (an empty object or a scalar in one: 1),
    iteratively, so no input can exhaust the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in children)
    return deepest


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}")
