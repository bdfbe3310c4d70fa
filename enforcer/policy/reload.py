"""The active policy and its hot reload.

Everything a decision depends on that an operator may change without a
restart (Rego modules, agent manifests, the tool registry, risk and HITL data,
shadow mode) lives in one frozen ActivePolicy. The pipeline reads it once per
call, so a call is decided entirely by one revision, and a reload is a single
reference swap: no call is lost or sees half a policy.

A candidate is built and tested off the event loop: it must load (manifests,
registry, config), pass its own Rego tests (`opa test`), and compile (for
the embedded engine: `opa build -t wasm`, so a changed Rego needs the opa
binary). Anything less leaves the running policy in force; the failure is
logged, written to the audit log, and reported to whoever asked for the
reload (admin RPC, SIGHUP or the directory watcher).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from enforcer.audit.records import Principal
from enforcer.config import ServiceConfig
from enforcer.errors import AeclError, ConfigError
from enforcer.identity.directory import Directory, build_directory
from enforcer.manifests import AgentManifest, ToolRegistry, load_agents, load_registry
from enforcer.policy.engine import PolicyEngine, create_engine
from enforcer.policy.holder import RELOADABLE, ActivePolicy, PolicyHolder
from enforcer.policy.opa import find_opa_binary
from enforcer.policy.policyset import PolicySet, build_policy_set
from enforcer.sandbox.profile import check_tools_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedPolicy:
    """What an operator wrote, read and validated, before any engine."""

    agents: dict[str, AgentManifest]
    registry: ToolRegistry
    policy_set: PolicySet
    directory: Directory


def service_secrets(config: ServiceConfig) -> list[Path]:
    """What no sandbox may ever see: signing keys, the log, the state, the
    token key and the credentials (keys of the demo, hashes)."""
    a, i = config.audit, config.identity
    tls = config.tls
    return [p for p in (a.signing_key, a.previous_signing_key, a.path, a.checkpoint_path, config.state.sqlite_path,
                        i.token_signing_key, i.credentials_dir, tls.key if tls else None)
            if p is not None]


def load_policy_set(config: ServiceConfig) -> LoadedPolicy:
    """Read manifests, registry and Rego; raise ConfigError naming the file."""
    agents = load_agents(config.agents_dir)
    registry = load_registry(config.tool_registry)
    if registry.tools_dir is not None:
        try:
            check_tools_dir(registry.tools_dir, service_secrets(config))
        except ValueError as e:
            raise ConfigError(f"{config.tool_registry}: {e}") from None
    check_connectors(config, registry)
    ident = config.identity
    directory = build_directory(agents, ident.approvers, ident.admins, ident.credentials_dir)
    policy_set = build_policy_set(config.policy.rego_dir, agents, config.policy, registry, config.connectors)
    return LoadedPolicy(agents, registry, policy_set, directory)


def check_connectors(config: ServiceConfig, registry: ToolRegistry) -> None:
    """Every connector a tool names is one the service config defines."""
    for name, tool in registry.tools.items():
        for connector in tool.connectors:
            if connector not in config.connectors:
                known = ", ".join(sorted(config.connectors)) or "none"
                raise ConfigError(f"{config.tool_registry}: tools.{name}.connectors: no connector named "
                                  f"'{connector}' in the service config (configured: {known})")


def compile_active(config: ServiceConfig, previous: PolicyEngine | None = None,
                   loaded: LoadedPolicy | None = None) -> ActivePolicy:
    """Compile an engine for the policy set; `previous` hands over its sidecar.
    Without `previous` (the service's start-up), say at WARNING when reloads
    will be refused for want of an opa binary."""
    loaded = loaded or load_policy_set(config)
    policy_set = loaded.policy_set
    if previous is None:
        warn_if_reloads_need_opa(config)
    engine = previous.derive(policy_set) if previous is not None else create_engine(policy_set, config.policy)
    return ActivePolicy(
        engine=engine,
        registry=loaded.registry,
        policy_set=policy_set,
        agents=loaded.agents,
        shadow_all=config.policy.mode == "shadow",
        shadow_agents=frozenset(config.policy.shadow_agents),
        directory=loaded.directory,
    )


def reload_needs_opa(config: ServiceConfig) -> str | None:
    """Why reloads will be refused on this machine (no opa binary), or None."""
    try:
        find_opa_binary(config.policy.opa.binary)
        return None
    except ConfigError as e:
        missing = str(e)
    if config.policy.reload.run_tests:
        return (f"every policy reload will be refused: a candidate must pass `opa test` "
                f"(policy.reload.run_tests) and {missing}")
    if config.policy.engine == "embedded":
        return (f"a reload that changes the Rego will be refused: the embedded engine compiles it with "
                f"`opa build -t wasm` and {missing}")
    return None


def warn_if_reloads_need_opa(config: ServiceConfig) -> None:
    why = reload_needs_opa(config)
    if why is not None:
        log.warning("no opa binary: %s. The policy in force now keeps serving.", why)


def watched_paths(config: ServiceConfig) -> list[Path]:
    paths = [config.policy.rego_dir, config.agents_dir, config.tool_registry]
    if config.identity.credentials_dir is not None:
        paths.append(config.identity.credentials_dir / "hashes")
    return paths


def fingerprint(paths: Iterable[Path], extra: Iterable[Path] = ()) -> str:
    """A cheap digest of names, sizes and mtimes of every file under paths."""
    h = hashlib.sha256()
    for root in [*paths, *extra]:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for p in files:
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def run_opa_tests(rego_dir: Path, binary: str | None = None, timeout_s: float = 120.0) -> None:
    """The candidate's own Rego tests, with `opa test`. Raise ConfigError
    naming what failed."""
    try:
        opa = find_opa_binary(binary)
    except ConfigError:
        raise ConfigError("no opa binary to run the candidate's Rego tests: build it with "
                          "scripts/build-opa.sh, or set policy.reload.run_tests: false") from None
    try:
        out = subprocess.run([opa, "test", "--ignore", "capabilities.json", "--format", "json", str(rego_dir)],
                             capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{rego_dir}: `opa test` did not finish within {timeout_s:g}s") from None
    try:
        results = json.loads(out.stdout) if out.stdout.strip() else None
    except ValueError:
        results = None
    if not isinstance(results, list):
        # Parse and compile errors come as text naming file and line.
        detail = " ".join((out.stderr or out.stdout).split())[:600]
        raise ConfigError(f"the candidate policy does not load: {detail}")
    if not results:
        raise ConfigError(f"{rego_dir}: the candidate policy has no tests")
    failed = [f"{r['location']['file']}:{r['location']['row']} {r['name']}"
              + (": error " + str(r['error'].get('message', ''))[:200] if r.get("error") else "")
              for r in results if r.get("fail") or r.get("error")]
    if failed or out.returncode != 0:
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        raise ConfigError("the candidate policy fails its own tests: " + "; ".join(failed[:5]) + more)


@dataclass
class ReloadResult:
    trigger: str
    applied: bool
    old_revision: str
    new_revision: str
    message: str
    at: float = field(default_factory=time.time)
    # Which parts of the policy set differ (policyset.COMPONENTS), and
    # "mode" for a change of shadow settings, "credentials" for key hashes.
    changed: tuple[str, ...] = ()
    # Who asked (an administrator over AdminService); None: the service itself.
    by: Principal | None = None


def needs_restart(old: ServiceConfig, new: ServiceConfig) -> list[str]:
    """Top-level settings (dotted for policy.*) that changed but are not
    reloadable (holder.RELOADABLE): a reload leaves them as they were."""
    a, b = old.model_dump(), new.model_dump()
    changed = []
    for key in sorted(set(a) | set(b)):
        if key in ("policy", "identity"):
            changed += [f"{key}.{k}" for k in sorted(set(a[key]) | set(b[key]))
                        if a[key].get(k) != b[key].get(k) and f"{key}.{k}" not in RELOADABLE]
        elif a.get(key) != b.get(key) and key not in RELOADABLE:
            changed.append(key)
    return changed


class PolicyReloader:
    """Owns reloads of the ActivePolicy in one holder (one at a time)."""

    def __init__(
        self,
        holder: PolicyHolder,
        config: ServiceConfig,
        load_config: Callable[[], ServiceConfig],
        record: Callable[[ReloadResult], Awaitable[None]],
        *,
        run_tests: bool = True,
        config_path: Path | None = None,
    ) -> None:
        self.holder = holder
        self._config = config
        self._load_config = load_config
        self._record = record
        self._run_tests = run_tests
        self._config_path = config_path
        self._lock = asyncio.Lock()
        self.last: ReloadResult | None = None
        self._retired: list[PolicyEngine] = []

    async def reload(self, trigger: str, by: Principal | None = None) -> ReloadResult:
        async with self._lock:
            current = self.holder.current
            try:
                config, candidate = await asyncio.get_running_loop().run_in_executor(None, self._candidate, current)
            except AeclError as e:
                result = ReloadResult(trigger, False, current.revision, current.revision,
                                      f"policy reload rejected, revision {current.revision} stays in force: {e}")
                log.error("%s", result.message)
            else:
                parts = candidate.policy_set.changed_since(current.policy_set)
                if (candidate.shadow_all, candidate.shadow_agents) != (current.shadow_all, current.shadow_agents):
                    parts.append("mode")
                if candidate.directory.digest != current.directory.digest:
                    parts.append("credentials")
                changed = bool(parts) or candidate.revision != current.revision
                restart = needs_restart(self._config, config)
                if restart:
                    log.warning("configuration changes to %s are not reloadable and stay as they were until "
                                "a restart", ", ".join(restart))
                # Swap even when unchanged: a derived OPA engine now owns the sidecar.
                self.holder.swap(candidate)  # one reference, atomic
                # Only what was applied is remembered, so a later reload
                # still reports the pending restart.
                self._config = _with_reloadable(self._config, config)
                self._retire(current.engine)
                if not changed:
                    result = ReloadResult(trigger, False, current.revision, current.revision, "policy unchanged")
                else:
                    result = ReloadResult(trigger, True, current.revision, candidate.revision,
                                          f"policy revision {candidate.revision} in force "
                                          f"(was {current.revision}); changed: {', '.join(parts) or 'engine'}",
                                          changed=tuple(parts))
                if restart:
                    result.message += f"; not applied until a restart: {', '.join(restart)}"
                    log.warning("%s (trigger: %s)", result.message, trigger)
                    if candidate.shadow_all or candidate.shadow_agents:
                        log.warning("SHADOW MODE: decisions for %s are logged but NOT enforced",
                                    "every agent" if candidate.shadow_all else sorted(candidate.shadow_agents))
            result.by = by
            self.last = result
            if result.message != "policy unchanged":
                await self._record(result)
            return result

    def current_config(self) -> ServiceConfig:
        return self._config

    def _candidate(self, current: ActivePolicy) -> tuple[ServiceConfig, ActivePolicy]:
        config = self._load_config()
        # The connectors are not reloadable: the policy sees the scopes of
        # those running, and the registry may name only those.
        running = config if "connectors" in RELOADABLE else config.model_copy(
            update={"connectors": self._config.connectors})
        loaded = load_policy_set(running)  # manifest and registry errors first: they name the field
        if self._run_tests:
            run_opa_tests(config.policy.rego_dir, config.policy.opa.binary)
        # The embedded engine compiles the candidate with `opa build -t wasm`
        # (unless it is the shipped or the running Rego): no OPA, no reload.
        # The engine kind and its settings are not reloadable: compile with the running ones.
        return config, compile_active(_with_reloadable(self._config, config), previous=current.engine,
                                      loaded=loaded)

    def _retire(self, engine: PolicyEngine) -> None:
        # Calls already evaluating on the old engine finish on it; it is
        # closed on the next reload or at shutdown, never under a caller.
        for old in self._retired:
            old.close()
        self._retired = [engine]

    def close(self) -> None:
        for old in self._retired:
            old.close()
        self._retired = []

    async def watch(self, paths: Callable[[], list[Path]], interval_s: float) -> None:
        """Poll the policy, manifest and registry files (and the config file);
        reload when anything changed. Polling, not inotify: it works on every
        filesystem and costs a few stat calls per second."""
        extra = [self._config_path] if self._config_path else []
        seen = fingerprint(paths(), extra)
        while True:
            await asyncio.sleep(interval_s)
            try:
                now = fingerprint(paths(), extra)
            except OSError as e:
                log.error("policy watcher: %s", e)
                continue
            if now != seen:
                seen = now
                # Let an editor finish writing the set before compiling it.
                await asyncio.sleep(min(interval_s, 0.2))
                seen = fingerprint(paths(), extra)
                await self.reload("watch")



def _with_reloadable(running: ServiceConfig, candidate: ServiceConfig) -> ServiceConfig:
    """The running configuration with only the reloadable settings taken
    from the candidate."""
    update: dict = {"agents_dir": candidate.agents_dir, "tool_registry": candidate.tool_registry}
    for section in ("policy", "identity"):
        keys = [k.split(".", 1)[1] for k in RELOADABLE if k.startswith(f"{section}.")]
        update[section] = getattr(running, section).model_copy(
            update={k: getattr(getattr(candidate, section), k) for k in keys})
    return running.model_copy(update=update)
