"""The live policy, and the one place that owns it.

Everything a decision depends on that an operator may change without a
restart lives in one frozen ActivePolicy. PolicyHolder holds the current one;
the reloader is the only writer (swap), and every reader (the pipeline, the
admin service, metrics) is handed the holder and reads `current` once per
call, so a call is decided entirely by one revision and a reload is a single
reference swap: no call is lost or sees half a policy.

Reloadable (RELOADABLE): the Rego modules under policy.rego_dir, the agent
manifests, the tool registry, and policy.risk, policy.hitl, policy.mode and
policy.shadow_agents, and the approvers and admins of the identity config
with every key hash (manifests, config, identity.credentials_dir). Everything else in the configuration (listen
addresses, audit, state, sandbox, limits, metrics, the engine and its OPA
settings, the reload settings themselves) is read once at start-up: a change
to it is reported by the reload as needing a restart, and not applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from enforcer.identity.directory import Directory
from enforcer.manifests import AgentManifest, ToolRegistry
from enforcer.policy.engine import PolicyEngine
from enforcer.policy.policyset import PolicySet

# Config keys a reload applies; the rest need a restart.
RELOADABLE = ("agents_dir", "tool_registry", "policy.rego_dir", "policy.risk", "policy.hitl", "policy.history",
              "policy.mode", "policy.shadow_agents", "identity.approvers", "identity.admins")


@dataclass(frozen=True)
class ActivePolicy:
    engine: PolicyEngine
    registry: ToolRegistry
    policy_set: PolicySet
    agents: dict[str, AgentManifest]
    shadow_all: bool = False
    shadow_agents: frozenset[str] = frozenset()
    # Who holds which key or certificate (manifests, config, credentials_dir).
    directory: Directory = Directory()

    @property
    def revision(self) -> str:
        return self.engine.revision

    def is_shadow(self, agent_id: str) -> bool:
        return self.shadow_all or agent_id in self.shadow_agents

    def call_budget(self, agent_id: str) -> int:
        """The agent's max_tool_calls_per_run; 0 for an agent without a
        manifest (whose calls the policy blocks anyway)."""
        manifest = self.agents.get(agent_id)
        return manifest.max_tool_calls_per_run if manifest is not None else 0


class PolicyHolder:
    def __init__(self, active: ActivePolicy) -> None:
        self._active = active

    @property
    def current(self) -> ActivePolicy:
        return self._active

    def swap(self, new: ActivePolicy) -> ActivePolicy:
        """Put `new` in force; returns the policy it replaced."""
        old, self._active = self._active, new
        return old
