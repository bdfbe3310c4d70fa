"""`policy.engine: embedded`: the policy compiled by OPA to WebAssembly and
evaluated in-process by wasmtime. The engine lives in enforcer.policy.wasm;
this name stays for the configuration's word and for existing imports.

(Until this change the embedded engine was rego-cpp, PyPI `regopy`. It was
dropped: it could not run the repository's own Rego tests, it printed invalid
JSON for some strings, and it was slower; see README, "Two engines, one
answer".)
"""

from __future__ import annotations

from enforcer.policy.wasm import WasmEngine as EmbeddedEngine

__all__ = ["EmbeddedEngine"]
