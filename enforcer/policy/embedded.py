"""In-process Rego through rego-cpp (PyPI `regopy`).

The policy is compiled once into a bundle with a prepared entrypoint; a plain
query would recompile the modules on every call (milliseconds instead of
about a tenth of one).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import regopy

from enforcer.errors import ConfigError, MalformedDecision, PolicyError
from enforcer.policy.policyset import ENTRYPOINT, PolicySet


class EmbeddedEngine:
    name = "embedded"
    blocking = False

    def __init__(self, policy_set: PolicySet) -> None:
        self.revision = policy_set.revision
        self._rego = regopy.Interpreter()
        try:
            for path, source in policy_set.modules.items():
                self._rego.add_module(path, source)
            self._rego.add_data(policy_set.data)
            self._bundle = self._rego.build(None, [ENTRYPOINT])
        except regopy.RegoError as e:
            raise ConfigError(f"policy does not compile: {e}") from e
        if not self._bundle.ok():
            raise ConfigError(f"policy does not compile: {self._bundle.node()}")
        # The interpreter holds the input between set_input and query.
        self._lock = threading.Lock()

    def evaluate(self, policy_input: dict[str, Any]) -> Any:
        with self._lock:
            try:
                self._rego.set_input(regopy.Input(policy_input))
                out = self._rego.query_bundle_entrypoint(self._bundle, ENTRYPOINT)
            except regopy.RegoError as e:
                raise PolicyError(f"embedded engine error: {e}") from e
            except ValueError as e:
                # regopy parses rego-cpp's output as JSON and rego-cpp does not
                # escape every string it prints: an unreadable answer is no answer.
                raise MalformedDecision(f"embedded engine returned unreadable output: {e}") from e
            if not out.ok():
                raise PolicyError(f"embedded engine error: {out}")
            # An undefined result makes expressions() abort the process inside
            # rego-cpp, so only a Results node is ever read further.
            node = out.node()
            if node.kind == regopy.NodeKind.Undefined:
                raise MalformedDecision("policy returned no decision (undefined)")
            if node.kind != regopy.NodeKind.Results:
                raise PolicyError(f"embedded engine returned a {node.kind!r} node: {out}")
            text = node.json()
        try:
            results = json.loads(text)
        except ValueError as e:
            raise MalformedDecision(f"embedded engine returned unparseable output: {e}") from e
        expressions = results.get("expressions") if isinstance(results, dict) else None
        if not isinstance(expressions, list) or len(expressions) != 1:
            raise MalformedDecision("policy returned no single decision")
        return expressions[0]

    def derive(self, policy_set: PolicySet) -> EmbeddedEngine:
        """An engine for a new policy set (hot reload); this one stays usable
        for the calls already evaluating on it."""
        return EmbeddedEngine(policy_set)

    def close(self) -> None:
        pass
