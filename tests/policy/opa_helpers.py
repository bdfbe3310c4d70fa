"""Shared by the OPA push and supervision tests: a small self-contained policy
(so the tests do not move with the repository's Rego), what a real sidecar
runs as read over its REST API, a bounded poll, and a fault-injecting HTTP
proxy in front of a real OPA (it drops or kills; OPA itself is never faked)."""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from enforcer.config import PolicyConfig, RiskModel
from enforcer.policy.opa import find_opa_binary
from enforcer.policy.policyset import PolicySet, build_policy_set

MAIN = """package aecl.main

import rego.v1

import data.aecl.allow

default decision := {
	"outcome": "block", "reason": "no grant for this action", "risk_score": 1, "gate": "allowlist",
	"rule": "allow.none", "risk_flags": [], "risk_weights": {}, "approval_ttl_seconds": 0,
}

decision := {
	"outcome": "block", "reason": "denied", "risk_score": 1, "gate": "allowlist",
	"rule": "allow.denied", "risk_flags": [], "risk_weights": {}, "approval_ttl_seconds": 0,
} if {
	allow.denied
} else := {
	"outcome": "approve", "reason": "granted", "risk_score": 0, "gate": "allowlist",
	"rule": "allow.granted", "risk_flags": [], "risk_weights": {}, "approval_ttl_seconds": 0,
} if {
	allow.granted
}
"""

ALLOW = """package aecl.allow

import rego.v1

default granted := false

default denied := false

granted if input.action.name == "read_invoice"
"""

# An operator's extra grant, in a file of its own: deleting the file must end it.
GRANT = """package aecl.allow

import rego.v1

granted if input.action.name == "bulk_export"
"""

# An extra deny, in a file of its own.
DENY = """package aecl.allow

import rego.v1

denied if input.action.name == "read_invoice"
"""

BROKEN = "package aecl.zz\n\nbroken := {{{\n"


def opa_binary() -> str:
    try:
        return find_opa_binary()
    except Exception as e:  # a missing OPA is a broken setup, never a skip
        pytest.fail(f"{e} (run scripts/build-opa.sh)")


def write_rego(rego: Path, **files: str | None) -> None:
    """aecl/<name>.rego for each name; None deletes the file."""
    (rego / "aecl").mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        path = rego / "aecl" / f"{name}.rego"
        if source is None:
            path.unlink()
        else:
            path.write_text(source)


def build(rego: Path, amount_threshold: float = 10000) -> PolicySet:
    policy = PolicyConfig(rego_dir=rego, risk=RiskModel(amount_threshold=amount_threshold))
    return build_policy_set(rego, {}, policy)


def call(action: str) -> dict[str, Any]:
    return {"action": {"name": action, "args": {}}}


def sidecar_runs(port: int) -> tuple[dict[str, str], Any, Any]:
    """The AECL modules (id -> source), data.aecl.config and the revision
    marker a real OPA holds, read over its REST API."""
    base = f"http://127.0.0.1:{port}/v1"
    policies = requests.get(f"{base}/policies", timeout=5).json()["result"]
    modules = {p["id"]: p["raw"] for p in policies if p["id"].startswith("aecl/")}
    config = requests.get(f"{base}/data/aecl/config", timeout=5).json().get("result")
    marker = requests.get(f"{base}/data/aecl_meta", timeout=5).json().get("result")
    return modules, config, marker


def pushed(policy_set: PolicySet) -> tuple[dict[str, str], Any, Any]:
    """What sidecar_runs() reads when exactly `policy_set` is in force."""
    return ({f"aecl/{path}": source for path, source in policy_set.modules.items()},
            policy_set.config_data, {"revision": policy_set.revision})


def eventually(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy (its exceptions count
    as not yet); fail naming `what` after timeout_s. A bound, not a timing."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - not yet
            last = e
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s}s (last: {last!r})")
        time.sleep(0.05)


class FaultyProxy:
    """An HTTP proxy to a real OPA. `fault(method, path)` decides per request:
    "pass" forwards it, "drop" closes the connection without an answer (the
    sidecar went away mid-request)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.fault: Callable[[str, str], str] | None = None
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                method, path = self.command, self.path
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.seen.append((method, path))
                verdict = proxy.fault(method, path) if proxy.fault else "pass"
                if verdict == "drop":
                    self.close_connection = True
                    return
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=10)
                    headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                    conn.request(method, path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    conn.close()
                except OSError:
                    self.close_connection = True  # upstream dead: so is the answer
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def policy_writes(method: str, path: str) -> bool:
    return method in ("PUT", "DELETE") and path.startswith("/v1/policies/")


def from_nth_policy_write(n: int, then: Callable[[], None] | None = None) -> Callable[[str, str], str]:
    """Drop the n-th module put/delete and every request after it (running
    `then` once, at the n-th): the sidecar is gone from there on."""
    seen = 0

    def fault(method: str, path: str) -> str:
        nonlocal seen
        if seen < n and policy_writes(method, path):
            seen += 1
            if seen == n and then is not None:
                then()
        return "drop" if seen >= n else "pass"

    return fault


def only_nth_policy_write(n: int) -> Callable[[str, str], str]:
    """Drop the n-th module put/delete only: one lost request mid-push."""
    seen = 0

    def fault(method: str, path: str) -> str:
        nonlocal seen
        if policy_writes(method, path):
            seen += 1
            if seen == n:
                return "drop"
        return "pass"

    return fault
