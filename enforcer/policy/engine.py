"""The policy-engine interface. Engines return the raw decision document or
raise PolicyError; turning that into a Decision (or a fail-closed BLOCK) is
the pipeline's job, the same for every engine.

Two engines: `embedded` (the default), the policy compiled by OPA to
WebAssembly and run in-process by wasmtime (enforcer.policy.wasm), and `opa`,
an OPA sidecar over its REST API (enforcer.policy.opa).
"""

from __future__ import annotations

from typing import Any, Protocol

from enforcer.config import PolicyConfig
from enforcer.policy.policyset import PolicySet


class PolicyEngine(Protocol):
    name: str
    revision: str
    # True when evaluate() does network I/O and must run off the event loop.
    blocking: bool

    def evaluate(self, policy_input: dict[str, Any]) -> Any: ...

    # A new engine of the same kind for another policy set (hot reload).
    def derive(self, policy_set: PolicySet) -> PolicyEngine: ...

    def close(self) -> None: ...


def create_engine(policy_set: PolicySet, config: PolicyConfig) -> PolicyEngine:
    if config.engine == "embedded":
        from enforcer.policy.wasm import WasmEngine

        return WasmEngine(policy_set, opa_binary=config.opa.binary)
    from enforcer.policy.opa import OpaEngine

    return OpaEngine(policy_set, config.opa)
