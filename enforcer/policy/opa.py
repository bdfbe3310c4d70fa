"""OPA as a sidecar, over its REST Data API (opa-python-client).

The service pushes its policy set (modules and data) to the sidecar, so the
revision it reports is the one OPA evaluates. When the sidecar is down, slow,
restarted without policies, or answers out of shape, evaluate() raises and the
pipeline blocks the call.

With `opa.bundle` set, the sidecar loads the policy set as an OPA bundle
through its bundle plugin instead (enforcer.policy.bundle), and every decision
is checked to come from a bundle whose revision is the service's own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from opa_client import OpaClient
from opa_client.errors import ConnectionsError

from enforcer.config import OpaConfig
from enforcer.errors import ConfigError, EngineUnavailable, MalformedDecision, PolicyError
from enforcer.policy.bundle import read_bundle_revision
from enforcer.policy.policyset import DATA_ROOT, ENTRYPOINT, PolicySet

log = logging.getLogger(__name__)

_PACKAGE, _RULE = ENTRYPOINT.rsplit("/", 1)
# Bundle mode: the decision and the revision of every active bundle owning
# data.aecl, evaluated together in one OPA snapshot (Query API). OPA keeps each
# activated bundle's manifest at data.system.bundles[<name>].manifest.
_BUNDLE_QUERY = f"""decision := [d | d := data.{_PACKAGE.replace("/", ".")}.{_RULE}]
revisions := {{b.manifest.revision |
    some b in data.system.bundles
    some root in b.manifest.roots
    root in {{"", "{DATA_ROOT[0]}"}}
}}"""
# Push mode: the revision marker the service writes after the modules and the
# data, read in the same snapshot as the decision. A push in progress (marker
# "updating") or another service's policy on a shared sidecar never passes as
# this engine's revision.
_MARKER = "aecl_meta"
_PUSH_QUERY = f"""decision := [d | d := data.{_PACKAGE.replace("/", ".")}.{_RULE}]
revision := object.get(data, ["{_MARKER}", "revision"], "")"""


class OpaEngine:
    name = "opa"
    blocking = True

    def __init__(self, policy_set: PolicySet, config: OpaConfig, *, process: OpaProcess | None = None) -> None:
        self.revision = policy_set.revision
        self._policy_set = policy_set
        self._config = config
        # A supervised sidecar handed over by derive() is reused, not restarted.
        self._process: OpaProcess | None = process
        if config.supervise and process is None:
            if config.bundle is not None:
                check_bundle_file(config.bundle, policy_set.revision)
            self._process = OpaProcess(find_opa_binary(config.binary), config.host, config.port, config.bundle)
            self._process.start()
        # retries=0: a dead sidecar must fail fast, not multiply the timeout.
        self._client = OpaClient(host=config.host, port=config.port, retries=0, timeout=config.timeout_s)
        self._pushed = False
        # Set by derive(): a newer engine owns the sidecar's policy now, and
        # this one must never push its older set back.
        self._superseded = False
        self._push_lock = threading.Lock()
        try:
            if config.bundle is None:
                self._push()
            else:
                self._verify_bundle()
        except EngineUnavailable as e:
            log.error("OPA sidecar not reachable at startup; every call is blocked until it is: %s", e)
        except PolicyError as e:
            if config.bundle is None:
                raise
            log.error("every call is blocked until the OPA sidecar runs this service's bundle: %s", e)

    def _verify_bundle(self) -> None:
        try:
            _, revisions = self._query(_BUNDLE_QUERY, "revisions", list, {})
        except (requests.RequestException, ConnectionsError, OSError) as e:
            raise EngineUnavailable(f"OPA at {self._config.host}:{self._config.port} is unavailable: {e}") from e
        self._check_revisions(revisions)

    def _query(self, query: str, field: str, kind: type, policy_input: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """One query, one OPA snapshot: the decision (shaped as the Data API
        shapes it) and the revision evidence `field` the query computes beside it
        (the push marker, or the revisions of the bundles owning data.aecl)."""
        answer = self._client.ad_hoc_query(query, policy_input)
        rows = answer.get("result") if isinstance(answer, dict) else None
        if not (isinstance(rows, list) and len(rows) == 1 and isinstance(rows[0], dict)):
            raise MalformedDecision(f"OPA answered the {field} query out of shape")
        decisions, evidence = rows[0].get("decision"), rows[0].get(field)
        if not isinstance(decisions, list) or not isinstance(evidence, kind):
            raise MalformedDecision(f"OPA answered the {field} query out of shape")
        return ({"result": decisions[0]} if decisions else {}), evidence

    def _check_revisions(self, revisions: list[Any]) -> None:
        where = f"OPA at {self._config.host}:{self._config.port}"
        if not revisions:
            raise EngineUnavailable(f"{where} has no active bundle for data.{DATA_ROOT[0]} (not loaded yet?)")
        if revisions != [self.revision]:
            raise PolicyError(
                f"{where} runs bundle revision {', '.join(map(str, revisions))}, but this service compiled "
                f"{self.revision}; rebuild the bundle with `aecl policy build` and reload the sidecar"
            )

    def _push(self) -> None:
        if self._config.bundle is not None:
            return  # the sidecar's bundle plugin owns the policies; evaluate() checks its revision
        with self._push_lock:
            if self._pushed:
                return
            if self._superseded:
                raise PolicyError("the policy changed while this call was decided (a reload swapped it in); retry")
            try:
                self._client.update_or_create_data({"revision": "updating"}, _MARKER)
                for path, source in self._policy_set.modules.items():
                    self._client.update_policy_from_string(source, f"aecl/{path}", rego_compat=False)
                self._client.update_or_create_data(self._policy_set.config_data, "/".join(DATA_ROOT))
                self._client.update_or_create_data({"revision": self.revision}, _MARKER)
            except (requests.RequestException, ConnectionsError, OSError) as e:
                raise EngineUnavailable(f"OPA at {self._config.host}:{self._config.port} is unavailable: {e}") from e
            except Exception as e:  # the client raises its own types for rejected policies
                raise PolicyError(f"OPA refused the policy set: {e}") from e
            self._pushed = True

    def evaluate(self, policy_input: dict[str, Any]) -> Any:
        self._push()
        try:
            if self._config.bundle is None:
                answer, revision = self._query(_PUSH_QUERY, "revision", str, policy_input)
                if not revision:
                    self._pushed = False  # a fresh sidecar: push again before the next call
                    raise EngineUnavailable(f"OPA at {self._config.host}:{self._config.port} has no AECL "
                                            "policy loaded (restarted?); it is pushed again for the next call")
                if revision != self.revision:
                    raise PolicyError(
                        f"OPA at {self._config.host}:{self._config.port} runs policy revision "
                        f"{revision or 'none'}, not this service's {self.revision} (a push in progress, "
                        "a reload, or another service on the same sidecar)")
            else:
                answer, revisions = self._query(_BUNDLE_QUERY, "revisions", list, policy_input)
                self._check_revisions(revisions)
        except requests.Timeout as e:
            raise EngineUnavailable(f"OPA did not answer within {self._config.timeout_s}s") from e
        except (requests.ConnectionError, ConnectionsError, OSError) as e:
            self._pushed = False  # a restarted sidecar comes back without our policies
            raise EngineUnavailable(f"OPA at {self._config.host}:{self._config.port} is unavailable: {e}") from e
        except requests.HTTPError as e:
            raise PolicyError(f"OPA evaluation failed: {e}") from e
        if not isinstance(answer, dict):
            raise MalformedDecision("OPA answered with a non-object")
        if "result" not in answer:
            self._pushed = False
            raise MalformedDecision("policy returned no decision (undefined)")
        return answer["result"]

    def derive(self, policy_set: PolicySet) -> OpaEngine:
        """An engine for a new policy set on the same sidecar (hot reload).
        A supervised OPA process moves to the new engine, so closing this one
        later leaves it running; if the new set is refused, it moves back."""
        process, self._process = self._process, None
        try:
            new = OpaEngine(policy_set, self._config, process=process)
        except BaseException:
            self._process = process
            raise
        self._superseded = True
        return new

    def close(self) -> None:
        self._client.close_connection()
        if self._process is not None:
            self._process.stop()


def check_bundle_file(bundle: Path, revision: str) -> None:
    """A supervised OPA must be given the bundle of this very policy set."""
    found = read_bundle_revision(bundle)
    if found != revision:
        raise ConfigError(
            f"{bundle}: bundle revision {found} is not this service's policy revision {revision}; "
            "rebuild it with `aecl policy build`"
        )


def development_opa() -> Path | None:
    """Where scripts/build-opa.sh leaves its build: $AECL_OPA_CACHE/bin/opa, or
    .cache/opa/bin/opa of the source checkout this package runs from. None for
    an installed package (no checkout, no build cache) without $AECL_OPA_CACHE."""
    cache = os.environ.get("AECL_OPA_CACHE")
    if cache:
        return Path(cache) / "bin" / "opa"
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "scripts" / "build-opa.sh").is_file():
        return checkout / ".cache" / "opa" / "bin" / "opa"
    return None


def find_opa_binary(configured: str | None = None) -> str:
    """The opa binary: `configured` (policy.opa.binary, --opa), else $OPA_BIN,
    else `opa` on PATH, else a development build (development_opa). A binary
    named explicitly must exist: it is never silently replaced by another."""
    def runnable(c: str | os.PathLike | None) -> bool:
        return bool(c) and os.path.isfile(c) and os.access(c, os.X_OK)

    for what, explicit in (("the configured opa binary", configured), ("$OPA_BIN", os.environ.get("OPA_BIN"))):
        if explicit:
            if not runnable(explicit):
                raise ConfigError(f"{what} is {explicit!r}, which is not an executable file")
            return explicit
    found = shutil.which("opa")
    if found:
        return found
    dev = development_opa()
    if dev is not None and runnable(dev):
        return str(dev)
    tried = "policy.opa.binary, $OPA_BIN, PATH" + (f", {dev}" if dev is not None else "")
    raise ConfigError(f"no opa binary (looked at {tried}): set policy.opa.binary or $OPA_BIN, put opa on PATH, "
                      "or in a source checkout run scripts/build-opa.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpaProcess:
    """A local `opa run --server`, started and stopped with the service.

    With a bundle, OPA's bundle plugin loads it from a file:// URL (config
    `bundles.aecl.resource`), exactly as a fleet sidecar loads it from a bundle
    server, and start() waits until the bundle is activated."""

    def __init__(self, binary: str, host: str, port: int, bundle: Path | None = None) -> None:
        self.binary, self.host, self.port, self.bundle = binary, host, port, bundle
        self._proc: subprocess.Popen | None = None

    def start(self, wait_s: float = 15.0) -> None:
        args = [self.binary, "run", "--server", "--addr", f"{self.host}:{self.port}",
                "--disable-telemetry", "--log-level", "error"]
        config_file = None
        if self.bundle is not None:
            bundles = {DATA_ROOT[0]: {"resource": Path(self.bundle).resolve().as_uri(), "persist": False}}
            with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="opa-config-", delete=False) as f:
                json.dump({"bundles": bundles}, f)
            config_file = f.name
            args += ["--config-file", config_file]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        try:
            self._wait_ready(wait_s)
        finally:
            if config_file:
                os.unlink(config_file)  # OPA reads its config once, at startup

    def _wait_ready(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise ConfigError(f"opa exited at startup with status {self._proc.returncode}: {err.strip()}")
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
        what = f"activate bundle {self.bundle}" if self.bundle is not None else f"listen on {self.host}:{self.port}"
        raise ConfigError(f"opa did not {what} within {wait_s}s" + (f": {err}" if err else ""))

    def _ready(self) -> bool:
        try:
            if self.bundle is None:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            # /health?bundles is 200 only once every configured bundle is activated.
            return requests.get(f"http://{self.host}:{self.port}/health?bundles", timeout=0.2).status_code == 200
        except (OSError, requests.RequestException):
            return False

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
