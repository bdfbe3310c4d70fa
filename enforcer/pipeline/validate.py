"""Checks on untrusted request fields, before anything else happens.

Each failure names the field (in the proto's terms) so a client in any
language can tell what to fix.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema.exceptions import ValidationError as SchemaViolation, best_match

from enforcer.config import LimitsConfig
from enforcer.errors import InvalidRequest
from enforcer.manifests import NAME_RE, ToolRegistry, ToolSpec
from enforcer.pipeline.request import CallRequest, StartTaskRequest

# \A...\Z and fullmatch, never `$`: in Python's re `$` also matches before a
# final "\n", and a newline in an id once made rego-cpp print invalid JSON.
ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
MAX_GOAL_BYTES = 4096
MAX_DECLARED_ACTIONS = 256
MAX_DECLARED_RESOURCES = 256
# A resource, declared or named by a call's resource_arg, is at most this long.
MAX_RESOURCE_BYTES = 256


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
    if len(req.declared_resources) > MAX_DECLARED_RESOURCES:
        raise InvalidRequest("declared_resources", f"more than {MAX_DECLARED_RESOURCES} entries")
    for i, resource in enumerate(req.declared_resources):
        require_resource(f"declared_resources[{i}]", resource)


def require_resource(field: str, value: str) -> None:
    """A declared resource: a printable string of 1 to MAX_RESOURCE_BYTES
    bytes (UTF-8), matched exactly against a call's resource argument."""
    if not value:
        raise InvalidRequest(field, "must not be empty")
    if len(value.encode("utf-8", errors="surrogatepass")) > MAX_RESOURCE_BYTES:
        raise InvalidRequest(field, f"longer than {MAX_RESOURCE_BYTES} bytes")
    if not value.isprintable():
        raise InvalidRequest(field, "must be printable (no control or separator characters but space)")


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
    validate_args_schema(req.args, spec)
    return spec


def validate_declared_args(args: dict[str, Any], spec: ToolSpec) -> None:
    """The arguments the registry gives a meaning to have that meaning's type.

    An amount is never negative: a transfer of a negative amount is a reversed
    transfer, which must be its own tool. An amount that is missing or not a
    number is left to the policy (unless the tool's args_schema refuses it),
    which counts it as large (rego/aecl/risk.rego; tests/policy/test_engines.py
    checks both engines). A path is a string. A resource (the argument the
    registry names in resource_arg), when sent, is a string or an integer of
    at most MAX_RESOURCE_BYTES bytes: the policy matches it exactly against
    the task's declared resources and counts repeats on it.
    """
    if spec.amount_arg is not None:
        amount = args.get(spec.amount_arg)
        if isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount < 0:
            raise InvalidRequest(f"call.args.{spec.amount_arg}", "must not be negative")
    for name in spec.path_args:
        if name in args and not isinstance(args[name], str):
            raise InvalidRequest(f"call.args.{name}", f"must be a string (the registry declares it a path), "
                                 f"not {_kind(args[name])}")
    name = spec.resource_arg
    if name is not None and name in args:
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InvalidRequest(f"call.args.{name}", "must be a string or an integer (the registry declares it "
                                 f"the resource the tool touches), not {_kind(value)}")
        # (An integer's length is judged by its bits first: str() of a huge one raises.)
        if (isinstance(value, int) and value.bit_length() > 4 * MAX_RESOURCE_BYTES) or \
                len(str(value).encode("utf-8", errors="surrogatepass")) > MAX_RESOURCE_BYTES:
            raise InvalidRequest(f"call.args.{name}", f"longer than {MAX_RESOURCE_BYTES} bytes (the registry "
                                 "declares it the resource the tool touches)")


def validate_args_schema(args: dict[str, Any], spec: ToolSpec) -> None:
    """The args match the registry's JSON Schema for the tool, or the call is
    refused naming the JSON path of the bad field and what is wrong with it,
    e.g. `call.args.invoice_id: is required`, `call.args.amount: must be a
    number`. The message never repeats the caller's value (it is logged in
    the payload already, and may be large)."""
    validator = spec.args_validator
    if validator is None:
        return
    error = best_match(validator.iter_errors(args))
    if error is None:
        return
    path = "call.args" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    raise InvalidRequest(*_violation(path, error))


_TYPE_NAMES = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "a boolean",
               "object": "an object", "array": "a list", "null": "null"}


def _violation(path: str, e: SchemaViolation) -> tuple[str, str]:
    """(field, message) for one schema violation, in the proto's terms."""
    kw, want, got = e.validator, e.validator_value, e.instance
    if kw == "required":
        missing = next((name for name in want if isinstance(got, dict) and name not in got), None)
        return (f"{path}.{missing}" if missing else path), "is required"
    if kw in ("additionalProperties", "unevaluatedProperties") and isinstance(got, dict):
        known = set(e.schema.get("properties", {}))
        patterns = list(e.schema.get("patternProperties", {}))
        extra = sorted(k for k in got if k not in known and not any(re.search(p, k) for p in patterns))
        if extra:
            return f"{path}.{extra[0]}", "is not an argument of this tool"
        return path, "has an argument this tool does not take"
    if kw == "type":
        kinds = [want] if isinstance(want, str) else list(want)
        return path, "must be " + " or ".join(_TYPE_NAMES.get(k, k) for k in kinds) + f", not {_kind(got)}"
    if kw == "enum":
        return path, "must be one of " + ", ".join(_short(v) for v in want)
    if kw == "const":
        return path, f"must be {_short(want)}"
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kw in bounds:
        return path, f"must be {bounds[kw]} {want}"
    sizes = {"minLength": ("at least", "character"), "maxLength": ("at most", "character"),
             "minItems": ("at least", "item"), "maxItems": ("at most", "item"),
             "minProperties": ("at least", "field"), "maxProperties": ("at most", "field")}
    if kw in sizes:
        bound, unit = sizes[kw]
        return path, f"must have {bound} {want} {unit}{'' if want == 1 else 's'}"
    if kw == "pattern":
        return path, f"must match {want}"
    if kw == "multipleOf":
        return path, f"must be a multiple of {want}"
    if kw == "uniqueItems":
        return path, "must not repeat an item"
    if kw in ("anyOf", "oneOf"):
        return path, f"must match {'exactly one' if kw == 'oneOf' else 'at least one'} of the schemas the registry allows"
    if kw == "not":
        return path, "matches a schema the registry forbids"
    return path, f"does not match the tool's args_schema ({kw})"


def _short(value: Any) -> str:
    """An operator's schema value, quoted briefly."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
