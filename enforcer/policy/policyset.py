"""A policy set: the Rego modules and the data document, with a content hash
(the revision) that every decision and log entry carries.

The data document is what OPA would load from the policy directory (every
`data.json` / `data.yaml` under it, at its directory's path: a file in
rego/vendors/ is data.vendors) plus what AECL compiles at data.aecl.config
(agent manifests, risk, HITL and history settings, and the scope of each
configured connector). The same document is given to
every engine and every command (service, `aecl decide`, replay, bundles), so
what `opa test` sees is what is enforced.

The revision covers everything that can change a decision: the Rego, the
operator's data, the manifests, the tool registry (it sets each tool's risk
properties in the input), the risk/HITL settings, the history rules and the
connectors' scopes. Each part has its own
digest (`components`), so a reload can say which of them changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from enforcer._yaml import read_document
from enforcer.config import PolicyConfig
from enforcer.errors import ConfigError
from enforcer.manifests import AgentManifest, ToolRegistry

ENTRYPOINT = "aecl/main/decision"
DATA_ROOT = ("aecl", "config")


DATA_FILES = ("data.json", "data.yaml", "data.yml")
# What a reload reports as changed, one digest each.
COMPONENTS = ("rego", "data", "agents", "registry", "risk", "history", "connectors")


class ScopedConnector(Protocol):
    """What the policy sees of a connector (enforcer.config.ConnectorConfig):
    only the scope a task needs to use it, never its upstream or credential."""

    scope: str


@dataclass(frozen=True)
class PolicySet:
    modules: dict[str, str]  # path relative to rego_dir -> source
    data: dict[str, Any]  # the whole data document
    revision: str
    components: dict[str, str] = field(default_factory=dict)  # part -> digest

    @property
    def has_operator_data(self) -> bool:
        """Data beside the Rego, beyond AECL's own data.aecl.config."""
        return any(k != DATA_ROOT[0] for k in self.data) or any(
            k != DATA_ROOT[1] for k in self.data.get(DATA_ROOT[0], {}))

    def changed_since(self, older: PolicySet) -> list[str]:
        """The parts (COMPONENTS) whose content differs from `older`'s."""
        return [c for c in COMPONENTS if self.components.get(c) != older.components.get(c)]

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


def load_data_files(rego_dir: Path) -> dict[str, Any]:
    """Every data.json / data.yaml under rego_dir, merged at its directory's
    path as OPA does (objects merge key by key). The same value defined by two
    files, or anything under data.aecl.config (AECL's own), is refused naming
    both files."""
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, ...], Path] = {}
    for path in sorted(p for p in rego_dir.rglob("*") if p.name in DATA_FILES and p.is_file()):
        doc = read_document(path)
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: a data file must hold a JSON/YAML object, not {type(doc).__name__}")
        prefix = path.parent.relative_to(rego_dir).parts
        for part in reversed(prefix):
            doc = {part: doc}
        _merge(merged, doc, (), path, origin)
    if DATA_ROOT[1] in merged.get(DATA_ROOT[0], {}):
        where = next(f for k, f in origin.items() if k[:2] == DATA_ROOT or (k == DATA_ROOT[:1]))
        raise ConfigError(f"{where}: data.{'.'.join(DATA_ROOT)} is AECL's own (manifests, risk and HITL "
                          "settings); put operator data elsewhere")
    return merged


def _merge(into: dict[str, Any], doc: dict[str, Any], at: tuple[str, ...], path: Path,
           origin: dict[tuple[str, ...], Path]) -> None:
    for key, value in doc.items():
        where = (*at, str(key))
        if key not in into:
            into[key] = value
            origin[where] = path
        elif isinstance(into[key], dict) and isinstance(value, dict):
            _merge(into[key], value, where, path, origin)
        else:
            other = next((f for k, f in origin.items() if where[: len(k)] == k or k[: len(where)] == where), "?")
            raise ConfigError(f"{path}: data.{'.'.join(where)} is also defined in {other}")


def compile_data(agents: dict[str, AgentManifest], policy: PolicyConfig,
                 connectors: Mapping[str, ScopedConnector] | None = None) -> dict[str, Any]:
    config = {
        "agents": {aid: m.model_dump(mode="json", exclude={"credentials"}) for aid, m in sorted(agents.items())},
        "risk": policy.risk.model_dump(mode="json"),
        "hitl": policy.hitl.model_dump(mode="json"),
        # Cumulative rules on a task's calls (rego/aecl/history.rego).
        "history": policy.history.model_dump(mode="json"),
        # name -> {scope}: the credential_scope entry a task needs to use the
        # connector (rego/aecl/scope.rego).
        "connectors": {name: {"scope": c.scope} for name, c in sorted((connectors or {}).items())},
    }
    return {DATA_ROOT[0]: {DATA_ROOT[1]: config}}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def build_policy_set(rego_dir: Path, agents: dict[str, AgentManifest], policy: PolicyConfig,
                     registry: ToolRegistry | None = None,
                     connectors: Mapping[str, ScopedConnector] | None = None) -> PolicySet:
    modules = load_modules(rego_dir)
    operator = load_data_files(rego_dir)
    compiled = compile_data(agents, policy, connectors)
    data = {**operator, DATA_ROOT[0]: {**operator.get(DATA_ROOT[0], {}), **compiled[DATA_ROOT[0]]}}
    own = compiled[DATA_ROOT[0]][DATA_ROOT[1]]
    components = {
        "rego": _digest(sorted(modules.items())),
        "data": _digest(operator),
        "agents": _digest(own["agents"]),
        "registry": _digest(registry.model_dump(mode="json") if registry is not None else None),
        "risk": _digest({k: own[k] for k in ("risk", "hitl")}),
        "history": _digest(own["history"]),
        "connectors": _digest(own["connectors"]),
    }
    revision = "sha256:" + _digest([components[c] for c in COMPONENTS])
    return PolicySet(modules=modules, data=data, revision=revision, components=components)
