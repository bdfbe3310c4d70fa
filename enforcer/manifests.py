"""Operator-written inputs to policy: agent manifests and the tool registry.

Both are validated strictly at load; an error names the file and the field.
Risk properties of a tool (irreversible, production, bulk, which argument is an
amount) come only from here, never from the agent's request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from enforcer._yaml import describe_validation_error, read_document
from enforcer.errors import ConfigError
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AgentManifest(_Strict):
    agent_id: Name
    allowed_actions: list[Name] = []
    blocked_actions: list[Name] = []
    # action -> rule, e.g. transfer_funds: requires_human_approval
    context_rules: dict[Name, Name] = {}
    credential_scope: list[str] = []
    token_ttl_seconds: int = Field(default=900, gt=0)
    max_tool_calls_per_run: int = Field(default=50, gt=0)
    auto_approve_threshold: float = Field(default=0.6, ge=0, le=1)

    @field_validator("auto_approve_threshold", mode="before")
    @classmethod
    def _int_is_a_number(cls, v: object) -> object:
        # strict mode would refuse `1` for a float; a whole number is still a threshold.
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class ToolSpec(_Strict):
    description: str = ""
    # argv inside the sandbox; the registry's tools_dir is mounted at SANDBOX_TOOLS_DIR.
    command: list[str] = Field(min_length=1)
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
    # The registered tool that undoes this one. An irreversible tool without
    # one always waits for a human (HITL routing in rego/aecl/hitl.rego).
    compensating_action: Name | None = None
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    # This tool's own sandbox settings (extra read-only binds, scratch size);
    # bind paths are checked at load like the profile's.
    sandbox: SandboxOverrides | None = None

    @model_validator(mode="after")
    def _path_args_are_distinct(self) -> ToolSpec:
        seen: set[str] = set()
        for name in self.path_args:
            if name in seen:
                raise ValueError(f"path_args: '{name}' is listed more than once")
            seen.add(name)
        if self.amount_arg is not None and self.amount_arg in seen:
            raise ValueError(f"path_args: '{self.amount_arg}' cannot be both an amount and a path")
        return self


class ToolRegistry(_Strict):
    tools_dir: Path | None = None
    tools: dict[Name, ToolSpec]

    @model_validator(mode="after")
    def _tools_dir_exists(self) -> ToolRegistry:
        if self.tools_dir is not None and not self.tools_dir.is_dir():
            raise ValueError(f"tools_dir {self.tools_dir} is not a directory")
        return self

    @model_validator(mode="after")
    def _compensations_exist(self) -> ToolRegistry:
        for name, tool in self.tools.items():
            if tool.compensating_action and tool.compensating_action not in self.tools:
                raise ValueError(f"tools.{name}.compensating_action: no tool named '{tool.compensating_action}'")
        return self

    def get(self, name: str) -> ToolSpec | None:
        return self.tools.get(name)


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
        return ToolRegistry.model_validate(raw)
    except ValidationError as e:
        raise describe_validation_error(path, e) from e
