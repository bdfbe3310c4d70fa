"""Operator-written inputs to policy: agent manifests and the tool registry.

Both are validated strictly at load; an error names the file and the field.
Risk properties of a tool (irreversible, production, bulk, which argument is an
amount) come only from here, never from the agent's request.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from enforcer._yaml import describe_validation_error, read_document
from enforcer.errors import ConfigError
from enforcer.identity.models import AgentCredentials
from enforcer.sandbox.profile import SandboxOverrides

_NAME = r"[A-Za-z][A-Za-z0-9_.:-]{0,127}"
# Anchored at the true end: in Python's re, `$` also matches before a final
# "\n" ("agent\n" would pass). Use NAME_RE.fullmatch.
NAME_RE = re.compile(rf"\A{_NAME}\Z")
# pydantic's `pattern=` runs Rust's regex crate, where `\z` is the end of the
# text (Rust has no `\Z`; its `$` means the same outside multi-line mode).
# tests/test_manifests.py checks that a trailing newline is refused.
Name = Annotated[str, Field(pattern=rf"^{_NAME}\z")]
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AgentManifest(_Strict):
    agent_id: Name
    allowed_actions: list[Name] = []
    blocked_actions: list[Name] = []
    # action -> rule, e.g. transfer_funds: requires_human_approval
    context_rules: dict[Name, Name] = {}
    # Bound into every task token of the agent (claim `scope`).
    credential_scope: list[str] = []
    # Lifetime of one task token (never past the task's own expiry).
    token_ttl_seconds: int = Field(default=900, gt=0)
    # How the agent proves who it is. Not part of the policy data: hashes
    # and certificate names are for authentication, not for Rego.
    credentials: AgentCredentials = AgentCredentials()
    max_tool_calls_per_run: int = Field(default=50, gt=0)
    # Whether the rollback engine may undo this agent's executions on its
    # request (rego/aecl/allowlist.rego); compensating tools need not be
    # on allowed_actions.
    may_roll_back: bool = True
    auto_approve_threshold: float = Field(default=0.6, ge=0, le=1)

    @field_validator("auto_approve_threshold", mode="before")
    @classmethod
    def _int_is_a_number(cls, v: object) -> object:
        # strict mode would refuse `1` for a float; a whole number is still a threshold.
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class ArgSource(_Strict):
    """Where one argument of a compensation comes from: an argument of the
    original call (`from: args`, `name: record_id`), the rollback_token the
    original call's tool returned (`from: rollback_token`), or the
    idempotency key the original call ran under, as the tool and its
    connectors saw it (`from: idempotency_key`). A source that has no value
    (no token came back: the outcome is unknown) leaves the argument out, so
    a compensation must tolerate "never happened"."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    source: Literal["args", "rollback_token", "idempotency_key"] = Field(alias="from")
    name: Name | None = None

    @model_validator(mode="after")
    def _name_for_args(self) -> ArgSource:
        if (self.source == "args") != (self.name is not None):
            raise ValueError("`name` is required with `from: args` and only there")
        return self


class Compensation(_Strict):
    """The registered tool that undoes a write, and how its arguments are
    built from the original call (design-time registration, the saga's step)."""

    tool: Name
    args: dict[Name, ArgSource] = {}


class McpToolRef(_Strict):
    """A tool of an upstream MCP server (the config's mcp.upstreams) that
    the registry names, so AECL exposes it (enforcer/mcp): `tool` is its
    name upstream. Its argument schema is the upstream's inputSchema unless
    the registry entry gives args_schema."""

    upstream: Name
    tool: str = Field(min_length=1, max_length=128)


class ToolSpec(_Strict):
    description: str = ""
    # argv inside the sandbox; the registry's tools_dir is mounted at
    # SANDBOX_TOOLS_DIR. Not used (and may be left out) for an MCP tool.
    command: list[str] = Field(default_factory=list)
    # An upstream MCP server's tool (enforcer/mcp) instead of a command.
    mcp: McpToolRef | None = None
    # With path_args: the directory every declared path must lie in, as
    # an absolute path (an MCP server's workspace); a relative path is taken
    # from it. Without it, a declared path must be relative and stay below
    # its start (rego/aecl/paths.rego).
    path_root: str | None = Field(default=None, pattern=r"^/")
    access: Literal["read", "write"]
    irreversible: bool = False
    affects_production: bool = False
    bulk_operation: bool = False
    # Name of the argument holding a monetary amount, if any.
    amount_arg: Name | None = None
    # Names of the arguments holding a file path. The policy input carries
    # each one's normalised form beside the raw value (input.paths), and the
    # shipped policy refuses a declared path that is absolute or climbs
    # above its start (rego/aecl/paths.rego).
    path_args: list[Name] = []
    # Name of the argument naming the resource the tool touches (record_id,
    # event_id, service). Its value, as sent (a string or an integer of at
    # most 256 bytes), is input.resource and is kept in the task's history;
    # a write outside the task's declared_resources is blocked at the intent
    # gate (rego/aecl/intent.rego), and repeats on one resource are bounded
    # (rego/aecl/history.rego).
    resource_arg: Name | None = None
    # The connectors (the service config's `connectors`, by name) this tool
    # may use. Every one must be configured (checked at load), and its scope
    # must be in the calling agent's credential_scope (rego/aecl/scope.rego).
    connectors: list[Name] = []
    # The registered tool that undoes this one, and its arguments (the
    # rollback engine, enforcer/pipeline/rollback.py). A write tool declares
    # either a compensation or `irreversible: true` (`aecl tools check`); an
    # irreversible tool always waits for a human (rego/aecl/hitl.rego).
    compensation: Compensation | None = None
    # A write whose effect does not outlive its sandbox (a report computed
    # and returned): nothing to undo, said why. The third declaration
    # `aecl tools check` accepts; a rollback answers no_compensating_action.
    nothing_to_undo: str | None = Field(default=None, min_length=1, max_length=512)
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    # This tool's own sandbox settings (extra read-only binds, scratch size);
    # bind paths are checked at load like the profile's.
    sandbox: SandboxOverrides | None = None
    # JSON Schema (Draft 2020-12) of the call's args. Checked at load
    # (check_args_schema), then every call's args are validated against it
    # before the policy (enforcer/pipeline/validate.py). None: not checked.
    args_schema: dict[str, Any] | None = None
    _args_validator: Draft202012Validator | None = PrivateAttr(default=None)

    @property
    def compensating_action(self) -> str | None:
        """The compensating tool's name (the policy input's tool.compensating_action)."""
        return self.compensation.tool if self.compensation is not None else None

    @model_validator(mode="after")
    def _command_or_mcp(self) -> ToolSpec:
        if self.mcp is None and not self.command:
            raise ValueError("command: required (the argv the sandbox runs), unless the tool is an MCP tool (mcp:)")
        if self.mcp is not None and self.command:
            raise ValueError("command: an MCP tool (mcp:) runs in its upstream server, not a command of its own")
        return self

    @field_validator("args_schema")
    @classmethod
    def _args_schema_is_strict(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            check_args_schema(v)
        return v

    def model_post_init(self, context: Any, /) -> None:
        if self.args_schema is not None:
            self._args_validator = Draft202012Validator(self.args_schema)

    @property
    def args_validator(self) -> Draft202012Validator | None:
        """The compiled args_schema (built once, at load)."""
        return self._args_validator

    @model_validator(mode="after")
    def _path_args_are_distinct(self) -> ToolSpec:
        seen: set[str] = set()
        for name in self.path_args:
            if name in seen:
                raise ValueError(f"path_args: '{name}' is listed more than once")
            seen.add(name)
        if self.amount_arg is not None and self.amount_arg in seen:
            raise ValueError(f"path_args: '{self.amount_arg}' cannot be both an amount and a path")
        if self.resource_arg is not None and self.resource_arg == self.amount_arg:
            raise ValueError(f"resource_arg: '{self.resource_arg}' cannot be both an amount and a resource")
        if len(set(self.connectors)) != len(self.connectors):
            twice = next(c for c in self.connectors if self.connectors.count(c) > 1)
            raise ValueError(f"connectors: '{twice}' is listed more than once")
        return self


# Draft 2020-12 keywords an args schema may use. Anything else is refused at
# load: the draft ignores unknown keywords, so a typo ("require", "maxlength")
# would otherwise silently accept every call.
_SCHEMA_KEYWORDS = frozenset({
    "$schema", "$id", "$ref", "$comment", "$defs",
    "type", "const", "enum", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains", "minContains",
    "maxProperties", "minProperties", "required", "dependentRequired",
    "prefixItems", "items", "contains", "additionalProperties", "properties", "patternProperties",
    "dependentSchemas", "propertyNames", "if", "then", "else", "allOf", "anyOf", "oneOf", "not",
    "unevaluatedItems", "unevaluatedProperties",
    "title", "description", "default", "deprecated", "readOnly", "writeOnly", "examples", "format",
    "contentEncoding", "contentMediaType", "contentSchema",
})
_ONE_SCHEMA = ("additionalProperties", "propertyNames", "items", "contains", "if", "then", "else", "not",
               "unevaluatedItems", "unevaluatedProperties", "contentSchema")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf")


def check_args_schema(schema: dict[str, Any]) -> None:
    """Refuse an args schema that is not a strict, self-contained Draft
    2020-12 schema of a JSON object. Raises ValueError naming the location
    (e.g. `properties.amount.type`)."""
    _json_only(schema, "")
    declared = schema.get("$schema")
    if declared is not None and declared != Draft202012Validator.META_SCHEMA["$schema"]:
        raise ValueError(f"$schema: must be {Draft202012Validator.META_SCHEMA['$schema']} (Draft 2020-12) or unset")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        where = _dotted(e.path)
        raise ValueError(f"{where + ': ' if where else ''}not a valid Draft 2020-12 schema: {e.message}") from None
    if schema.get("type") != "object":
        raise ValueError("type: must be 'object' (call.args is a JSON object)")
    _walk(schema, schema, "")


def _json_only(value: Any, where: str) -> None:
    """Plain JSON only: YAML can also produce dates, non-string keys and .inf."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where or '<schema>'}: key {k!r} is not a string")
            _json_only(v, f"{where}.{k}" if where else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _json_only(v, f"{where}[{i}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: numbers must be finite")
    elif value is not None and not isinstance(value, (str, int, bool)):
        raise ValueError(f"{where}: {type(value).__name__} is not a JSON value (quote it)")


def _walk(node: Any, root: dict[str, Any], where: str) -> None:
    if isinstance(node, bool):
        return
    for key, value in node.items():
        at = f"{where}.{key}" if where else key
        if key not in _SCHEMA_KEYWORDS:
            raise ValueError(f"{at}: unknown keyword (Draft 2020-12 keywords only; a typo would match anything)")
        if key == "$id" and where:
            raise ValueError(f"{at}: only the root may have an $id")
        if key == "$ref":
            _check_ref(value, root, at)
        elif key in _ONE_SCHEMA:
            _walk(value, root, at)
        elif key in _SCHEMA_MAPS:
            for name, sub in value.items():
                _walk(sub, root, f"{at}.{name}")
        elif key in _SCHEMA_LISTS:
            for i, sub in enumerate(value):
                _walk(sub, root, f"{at}[{i}]")


def _check_ref(ref: str, root: dict[str, Any], at: str) -> None:
    """Only a JSON pointer into this schema ("#/$defs/money"), and it must resolve."""
    if ref != "#" and not ref.startswith("#/"):
        raise ValueError(f"{at}: only a reference within this schema ('#/...') is allowed, not {ref!r}")
    target: Any = root
    for part in ref[2:].split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            raise ValueError(f"{at}: {ref!r} does not resolve within this schema")
    if not isinstance(target, (dict, bool)):
        raise ValueError(f"{at}: {ref!r} does not point to a schema")


def _dotted(path: Any) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class ToolRegistry(_Strict):
    tools_dir: Path | None = None
    tools: dict[Name, ToolSpec]

    @model_validator(mode="after")
    def _tools_dir_exists(self) -> ToolRegistry:
        if self.tools_dir is not None and not self.tools_dir.is_dir():
            raise ValueError(f"tools_dir {self.tools_dir} is not a directory")
        return self

    @model_validator(mode="after")
    def _one_way_to_undo(self) -> ToolRegistry:
        for name, tool in self.tools.items():
            declared = [k for k, v in (("compensation", tool.compensation), ("irreversible", tool.irreversible or None),
                                       ("nothing_to_undo", tool.nothing_to_undo)) if v]
            if len(declared) > 1:
                raise ValueError(f"tools.{name}: declares {' and '.join(declared)}; a tool is undone one way: "
                                 "a compensation, irreversible: true, or nothing_to_undo")
        return self

    @model_validator(mode="after")
    def _compensations_exist(self) -> ToolRegistry:
        for name, tool in self.tools.items():
            c = tool.compensation
            if c is None:
                continue
            if c.tool not in self.tools:
                raise ValueError(f"tools.{name}.compensation.tool: no tool named '{c.tool}'")
            if c.tool == name:
                raise ValueError(f"tools.{name}.compensation.tool: a tool cannot compensate itself")
            declared = _declared_args(tool)
            for arg, src in c.args.items():
                if src.source == "args" and declared is not None and src.name not in declared:
                    raise ValueError(f"tools.{name}.compensation.args.{arg}: '{src.name}' is not an argument of "
                                     f"{name} (its args_schema's properties)")
        return self

    def get(self, name: str) -> ToolSpec | None:
        return self.tools.get(name)


def _declared_args(tool: ToolSpec) -> set[str] | None:
    """The argument names a tool's schema declares; None without a schema (any name)."""
    if tool.args_schema is None:
        return None
    props = tool.args_schema.get("properties")
    return set(props) if isinstance(props, dict) else set()


def load_agents(directory: Path) -> dict[str, AgentManifest]:
    if not directory.is_dir():
        raise ConfigError(f"{directory}: agents directory does not exist")
    agents: dict[str, AgentManifest] = {}
    origin: dict[str, Path] = {}
    for path in sorted(p for p in directory.iterdir() if p.suffix in MANIFEST_SUFFIXES):
        raw = read_document(path)
        try:
            manifest = AgentManifest.model_validate(raw)
        except ValidationError as e:
            raise describe_validation_error(path, e) from e
        if manifest.agent_id in agents:
            raise ConfigError(
                f"{path}: field 'agent_id': '{manifest.agent_id}' already defined in {origin[manifest.agent_id]}"
            )
        agents[manifest.agent_id] = manifest
        origin[manifest.agent_id] = path
    return agents


def load_registry(path: Path) -> ToolRegistry:
    raw = read_document(path)
    if isinstance(raw, dict) and isinstance(raw.get("tools_dir"), str):
        raw["tools_dir"] = (path.parent / raw["tools_dir"]).resolve()
    try:
        registry = ToolRegistry.model_validate(raw)
    except ValidationError as e:
        raise describe_validation_error(path, e) from e
    # An MCP tool without one is checked against its upstream's inputSchema (enforcer.mcp).
    unchecked = sorted(name for name, tool in registry.tools.items() if tool.args_schema is None and tool.mcp is None)
    if unchecked:
        log.warning("%s: no args_schema for %s: their arguments are not checked", path, ", ".join(unchecked))
    return registry
