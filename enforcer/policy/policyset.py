"""A policy set: the Rego modules plus the data document compiled from the
operator's manifests, with a content hash (the revision) that every decision
and log entry carries."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enforcer.config import PolicyConfig
from enforcer.errors import ConfigError
from enforcer.manifests import AgentManifest

ENTRYPOINT = "aecl/main/decision"
DATA_ROOT = ("aecl", "config")


@dataclass(frozen=True)
class PolicySet:
    modules: dict[str, str]  # path relative to rego_dir -> source
    data: dict[str, Any]  # the whole data document
    revision: str

    @property
    def config_data(self) -> dict[str, Any]:
        return self.data[DATA_ROOT[0]][DATA_ROOT[1]]


# Built-ins that reach the network or the host. `opa check --capabilities
# rego/capabilities.json` refuses them in CI; this check refuses them at load
# time too, because a sidecar OPA would otherwise evaluate them.
FORBIDDEN_BUILTINS = ("http.send", "net.lookup_ip_addr", "opa.runtime")
_STRINGS_AND_COMMENTS = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')
_FORBIDDEN_CALL = re.compile(r"\b(" + "|".join(re.escape(b) for b in FORBIDDEN_BUILTINS) + r")\s*\(")


def check_builtins(name: str, source: str) -> None:
    # Blank out strings and comments but keep newlines, so line numbers hold.
    code = _STRINGS_AND_COMMENTS.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)
    m = _FORBIDDEN_CALL.search(code)
    if m:
        line = code.count("\n", 0, m.start()) + 1
        raise ConfigError(f"{name}:{line}: built-in '{m.group(1)}' is not allowed in AECL policies "
                          "(no network or host access from Rego)")


def load_modules(rego_dir: Path) -> dict[str, str]:
    """All non-test .rego files under rego_dir."""
    if not rego_dir.is_dir():
        raise ConfigError(f"{rego_dir}: policy directory does not exist")
    modules = {
        str(p.relative_to(rego_dir)): p.read_text(encoding="utf-8")
        for p in sorted(rego_dir.rglob("*.rego"))
        if not p.name.endswith("_test.rego")
    }
    if not modules:
        raise ConfigError(f"{rego_dir}: no .rego policy files")
    for name, source in modules.items():
        check_builtins(str(rego_dir / name), source)
    return modules


def compile_data(agents: dict[str, AgentManifest], policy: PolicyConfig) -> dict[str, Any]:
    config = {
        "agents": {aid: m.model_dump(mode="json") for aid, m in sorted(agents.items())},
        "risk": policy.risk.model_dump(mode="json"),
        "hitl": policy.hitl.model_dump(mode="json"),
    }
    return {DATA_ROOT[0]: {DATA_ROOT[1]: config}}


def build_policy_set(rego_dir: Path, agents: dict[str, AgentManifest], policy: PolicyConfig) -> PolicySet:
    modules = load_modules(rego_dir)
    data = compile_data(agents, policy)
    h = hashlib.sha256()
    for name, src in sorted(modules.items()):
        h.update(b"module\x00" + name.encode() + b"\x00" + src.encode() + b"\x00")
    h.update(b"data\x00" + json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    return PolicySet(modules=modules, data=data, revision="sha256:" + h.hexdigest())
