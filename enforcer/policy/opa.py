"""OPA as a sidecar, over its REST Data API.

The service pushes its policy set (modules and data) to the sidecar, so the
revision it reports is the one OPA evaluates. A push makes the sidecar run
exactly that set: modules that are gone are deleted, and a push that fails
half-way is rolled back to what the sidecar ran before (or, if even that
fails, every call is blocked until a later push succeeds). When the sidecar
is down, slow, restarted without policies, or answers out of shape,
evaluate() raises and the pipeline blocks the call.

With `opa.bundle` set, the sidecar loads the policy set as an OPA bundle
through its bundle plugin instead (enforcer.policy.bundle), and every decision
is checked to come from a bundle whose revision is the service's own.

With `opa.supervise`, the service runs the sidecar itself (OpaProcess) and
restarts it with backoff when it dies; calls are blocked while it is down.

Transport: a small keep-alive HTTP/1.1 client on http.client (_Http): a pool
of persistent connections, each request bounded by opa.timeout_s, a
connection closed after any failure and never reused (a request on a
kept-alive connection the sidecar closed meanwhile is sent once more on a
fresh one; every request here is idempotent). A decision is one Data API call
that also carries the revision evidence, read in the same OPA snapshot: in
push mode the package of a small helper module the push installs (decision
and revision marker side by side), in bundle mode the decision with
`?provenance`, which names the revision of every active bundle.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from enforcer.config import OpaConfig
from enforcer.errors import ConfigError, EngineUnavailable, MalformedDecision, PolicyError
from enforcer.policy.bundle import read_bundle_revision
from enforcer.policy.policyset import DATA_ROOT, ENTRYPOINT, PolicySet

log = logging.getLogger(__name__)

_DECISION_PATH = f"data/{ENTRYPOINT}"
# Push mode: the revision marker the service writes after the modules and the
# data, read in the same snapshot as the decision through the helper package
# below. A push in progress (marker "updating") or another service's policy
# on a shared sidecar never passes as this engine's revision.
_MARKER = "aecl_meta"
_ANSWER_PACKAGE = "aecl_answer"
_ANSWER_ID = f"{_ANSWER_PACKAGE}/answer.rego"
_ANSWER_MODULE = f"""package {_ANSWER_PACKAGE}

import rego.v1

decision := [d | d := data.{ENTRYPOINT.replace("/", ".")}]

default revision := ""

revision := data.{_MARKER}.revision
"""


class _Unreachable(OSError):
    """The request did not get an answer (refused, reset, closed, timed out)."""


class _Timeout(_Unreachable):
    pass


# What a request can fail on in transit (the sidecar went away, timed out, reset).
_TRANSPORT = (OSError,)


class _Http:
    """Keep-alive HTTP/1.1 to one OPA: idle connections are kept in a pool and
    reused; a connection that failed in any way is closed, never reused."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        headers = {"Content-Type": content_type} if body is not None else {}
        for attempt in (0, 1):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except TimeoutError as e:
                conn.close()
                raise _Timeout(f"no answer within {self.timeout_s:g}s") from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                # An idle keep-alive connection the server closed: once more, fresh.
                if reused and attempt == 0 and isinstance(e, (ConnectionError, http.client.BadStatusLine)):
                    continue
                raise _Unreachable(str(e) or type(e).__name__) from e
            if response.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
            return response.status, data
        raise _Unreachable("no answer")  # not reached: the second attempt returns or raises

    def json(self, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
        status, data = self.request(method, path, None if doc is None else json.dumps(doc).encode("utf-8"))
        try:
            return status, (json.loads(data) if data else None)
        except ValueError:
            return status, None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Rejected(Exception):
    """OPA answered a push request with an error status (a module that does
    not compile, a conflict, a write it refuses)."""


@dataclass(frozen=True)
class _Contents:
    """The AECL part of what a sidecar runs: its modules by id, the data
    document at data.aecl.config and the revision marker (None: absent)."""

    modules: dict[str, str]
    config: Any
    marker: Any

    @property
    def label(self) -> str:
        revision = self.marker.get("revision") if isinstance(self.marker, dict) else None
        return f"revision {revision}" if revision else "no AECL policy"


def _ours(policy: dict[str, Any]) -> bool:
    """A module this service manages: pushed under aecl/, or in a package
    under data.aecl (whoever put it there, it takes part in the decision)."""
    path = [t.get("value") for t in (policy.get("ast") or {}).get("package", {}).get("path", [])
            if isinstance(t, dict)]
    return str(policy.get("id", "")).startswith(f"{DATA_ROOT[0]}/") or path[:2] == ["data", DATA_ROOT[0]]


def _opa_message(status: int, data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return f"status {status}: {data.decode('utf-8', 'replace').strip()[:300]}"
    if not isinstance(body, dict):
        return f"status {status}"
    details = [f"{e.get('location', {}).get('file', '')}:{e.get('location', {}).get('row', '')}: {e.get('message')}"
               if e.get("location") else str(e.get("message"))
               for e in body.get("errors") or [] if isinstance(e, dict)]
    return f"status {status}: {body.get('message', '')}" + (f" ({'; '.join(details)})" if details else "")


class _Sidecar:
    """One OPA as the engines derived from one another (hot reloads) share it:
    at most one push at a time, the engine whose set it must run (only that
    one pushes), whether it runs no complete set at all, and, supervised,
    its process."""

    def __init__(self, process: OpaProcess | None) -> None:
        self.process = process
        self.lock = threading.Lock()
        self.owner: OpaEngine | None = None
        # Why the sidecar may run a mix of two sets (a push and its rollback
        # both failed); every call is blocked until a push succeeds.
        self.failed: str | None = None

    def restarted(self) -> None:
        owner = self.owner
        if owner is not None:
            owner._after_restart()


class OpaEngine:
    name = "opa"
    blocking = True

    def __init__(self, policy_set: PolicySet, config: OpaConfig, *, _sidecar: _Sidecar | None = None) -> None:
        if config.bundle is None and policy_set.has_operator_data:
            # Push mode pushes the modules and data.aecl.config only; rather
            # than run a policy without the data its tests saw, refuse.
            raise ConfigError("the policy directory has data files (data.json/data.yaml): with "
                              "policy.engine: opa they need bundle mode (policy.opa.bundle, built by "
                              "`aecl policy build`), or use the embedded engine")
        self.revision = policy_set.revision
        self._policy_set = policy_set
        self._config = config
        self._where = f"OPA at {config.host}:{config.port}"
        self._pushed = False
        fresh = _sidecar is None
        if _sidecar is None:
            process = None
            if config.supervise:
                if config.bundle is not None:
                    check_bundle_file(config.bundle, policy_set.revision)
                process = OpaProcess(find_opa_binary(config.binary), config.host, config.port, config.bundle)
                process.start()
            _sidecar = _Sidecar(process)
        # A sidecar handed over by derive() (and its supervised process) is reused, not restarted.
        self._sidecar = _sidecar
        self._http = _Http(config.host, config.port, config.timeout_s)
        try:
            if fresh and _sidecar.process is not None:
                _sidecar.process.supervise(_sidecar.restarted)
            self._take_over()
        except BaseException:
            self._close_connections()
            if fresh and _sidecar.process is not None:
                _sidecar.process.stop()
            raise

    def _take_over(self) -> None:
        """Become the engine whose set the sidecar runs. A set the sidecar
        refuses (push mode) leaves the previous owner in force and raises."""
        sidecar = self._sidecar
        with sidecar.lock:
            previous, sidecar.owner = sidecar.owner, self
            try:
                if self._config.bundle is None:
                    self._push_locked()
                else:
                    self._verify_bundle()
            except EngineUnavailable as e:
                log.error("OPA sidecar does not run policy revision %s yet; every call is blocked until it "
                          "does: %s", self.revision, e)
            except PolicyError as e:
                if self._config.bundle is None:
                    sidecar.owner = previous
                    raise
                log.error("every call is blocked until the OPA sidecar runs this service's bundle: %s", e)

    @property
    def _superseded(self) -> bool:
        """A newer engine (derive()) owns the sidecar's policy now, and this
        one must never push its older set back."""
        return self._sidecar.owner is not self

    def _verify_bundle(self) -> None:
        """The revisions of the active bundles owning data.aecl (at start-up and
        after a restart; every decision then checks its own provenance)."""
        try:
            status, body = self._http.json("GET", "/v1/data/system/bundles")
        except _TRANSPORT as e:
            raise EngineUnavailable(f"{self._where} is unavailable: {e}") from e
        bundles = body.get("result", {}) if isinstance(body, dict) and status == 200 else None
        if not isinstance(bundles, dict):
            raise MalformedDecision("OPA answered the bundle status out of shape")
        revisions = sorted({b["manifest"].get("revision") for b in bundles.values()
                            if isinstance(b, dict) and isinstance(b.get("manifest"), dict)
                            and set(b["manifest"].get("roots") or [""]) & {"", DATA_ROOT[0]}}, key=str)
        self._check_revisions(revisions)

    def _query(self, policy_input: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """One Data API call, one OPA snapshot: the decision (as the Data API
        shapes it: {"result": ...}, or {} when undefined) and the revision
        evidence read beside it (push mode: the marker, a string; bundle mode:
        the revisions of the active bundles, a list)."""
        if self._config.bundle is None:
            status, body = self._http.json("POST", f"/v1/data/{_ANSWER_PACKAGE}", {"input": policy_input})
            if status != 200 or not isinstance(body, dict):
                raise PolicyError(f"OPA evaluation failed: status {status}: {json.dumps(body)[:300]}")
            package = body.get("result", {})
            decisions = package.get("decision", []) if isinstance(package, dict) else None
            revision = package.get("revision", "") if isinstance(package, dict) else None
            if not isinstance(decisions, list) or not isinstance(revision, str):
                raise MalformedDecision("OPA answered the decision query out of shape")
            return ({"result": decisions[0]} if decisions else {}), revision
        status, body = self._http.json("POST", f"/v1/{_DECISION_PATH}?provenance=true", {"input": policy_input})
        if status != 200 or not isinstance(body, dict):
            raise PolicyError(f"OPA evaluation failed: status {status}: {json.dumps(body)[:300]}")
        bundles = (body.get("provenance") or {}).get("bundles") or {}
        if not isinstance(bundles, dict):
            raise MalformedDecision("OPA answered the decision's provenance out of shape")
        revisions = sorted({b.get("revision") for b in bundles.values() if isinstance(b, dict)}, key=str)
        return ({"result": body["result"]} if "result" in body else {}), revisions

    def _check_revisions(self, revisions: list[Any]) -> None:
        """A bundle with this service's revision must be active; no other can
        own data.aecl beside it (OPA refuses bundles with overlapping roots)."""
        if not revisions:
            raise EngineUnavailable(f"{self._where} has no active bundle for data.{DATA_ROOT[0]} (not loaded yet?)")
        if self.revision not in revisions:
            raise PolicyError(
                f"{self._where} runs bundle revision {', '.join(map(str, revisions))}, but this service compiled "
                f"{self.revision}; rebuild the bundle with `aecl policy build` and reload the sidecar"
            )

    # --- push mode: the sidecar runs exactly the pushed set ---------------

    def _rest(self, method: str, path: str, *, text: str | None = None, doc: Any = None,
              missing_ok: bool = False) -> Any:
        url = f"/v1/{quote(path, safe='/')}"
        if text is not None:
            status, data = self._http.request(method, url, text.encode("utf-8"), "text/plain")
        else:
            body = json.dumps(doc).encode("utf-8") if method == "PUT" else None
            status, data = self._http.request(method, url, body)
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            raise _Rejected(f"{method} /v1/{path}: {_opa_message(status, data)}")
        try:
            return json.loads(data) if data else None
        except ValueError as e:
            raise _Rejected(f"{method} /v1/{path}: not JSON") from e

    def _list_policies(self) -> list[dict[str, Any]]:
        listed = self._rest("GET", "policies")
        policies = listed.get("result") if isinstance(listed, dict) else None
        if not isinstance(policies, list):
            raise _Rejected("GET /v1/policies: answered out of shape")
        return [p for p in policies if isinstance(p, dict) and "id" in p]

    def _read_modules(self) -> dict[str, str]:
        return {p["id"]: p.get("raw", "") for p in self._list_policies() if _ours(p)}

    def _read_contents(self) -> _Contents:
        config = (self._rest("GET", "/".join(("data", *DATA_ROOT))) or {}).get("result")
        marker = (self._rest("GET", f"data/{_MARKER}") or {}).get("result")
        return _Contents(self._read_modules(), config, marker)

    def _apply(self, target: _Contents) -> None:
        """Make the sidecar run `target`: the marker says "updating" first (no
        decision passes as any revision meanwhile), then modules are deleted
        and put until they are exactly target's, then the data, then the
        target's marker. OPA compiles after every single put or delete, so
        one order may fail where another succeeds (a rule moved between
        modules, a function deleted before its caller): what is refused is
        tried again after the rest, until a round makes no progress."""
        self._rest("PUT", f"data/{_MARKER}", doc={"revision": "updating"})
        listed = self._list_policies()
        current = {p["id"]: p.get("raw", "") for p in listed if _ours(p)}
        # The helper answering a decision with the marker beside it (outside data.aecl).
        if not any(p["id"] == _ANSWER_ID and p.get("raw") == _ANSWER_MODULE for p in listed):
            self._rest("PUT", f"policies/{_ANSWER_ID}", text=_ANSWER_MODULE)
        ops = [("DELETE", i, None) for i in sorted(current) if i not in target.modules]
        ops += [("PUT", i, s) for i, s in sorted(target.modules.items()) if current.get(i) != s]
        while ops:
            refused: list[tuple[str, str, str | None]] = []
            errors: list[str] = []
            for method, module_id, source in ops:
                try:
                    self._rest(method, f"policies/{module_id}", text=source, missing_ok=method == "DELETE")
                except _Rejected as e:
                    refused.append((method, module_id, source))
                    errors.append(str(e))
            if len(refused) == len(ops):
                raise _Rejected("; ".join(errors))
            ops = refused
        config_path = "/".join(("data", *DATA_ROOT))
        if target.config is None:
            self._rest("DELETE", config_path, missing_ok=True)
        else:
            self._rest("PUT", config_path, doc=target.config)
        if target.marker is None:
            self._rest("DELETE", f"data/{_MARKER}", missing_ok=True)
        else:
            self._rest("PUT", f"data/{_MARKER}", doc=target.marker)

    def _push_locked(self) -> None:
        """Push this engine's set (the caller holds the sidecar lock). On a
        failure, roll the sidecar back to what it ran before; if that fails
        too, mark it failed: every call is then blocked until a push succeeds."""
        target = _Contents({f"{DATA_ROOT[0]}/{p}": s for p, s in self._policy_set.modules.items()},
                           self._policy_set.config_data, {"revision": self.revision})
        try:
            before = self._read_contents()
        except _Rejected as e:
            raise PolicyError(f"{self._where} did not say which policy it runs: {e}") from e
        except _TRANSPORT as e:
            raise EngineUnavailable(f"{self._where} is unavailable: {e}") from e
        self._pushed = False
        try:
            self._apply(target)
        except (_Rejected, *_TRANSPORT) as e:
            refused = isinstance(e, _Rejected)
            what = f"OPA refused the policy set: {e}" if refused else f"{self._where} is unavailable: {e}"
            kind = PolicyError if refused else EngineUnavailable
            try:
                self._apply(before)
            except (_Rejected, *_TRANSPORT) as rollback:
                self._sidecar.failed = (f"the push of revision {self.revision} failed ({e}) and so did the "
                                        f"rollback to {before.label} ({rollback})")
                log.critical("%s may run a mix of policy sets: %s; every call is blocked until a push succeeds",
                             self._where, self._sidecar.failed)
                raise kind(f"{what}; the rollback to {before.label} failed too ({rollback}): every call is "
                           "blocked until a push succeeds") from e
            log.error("push of policy revision %s failed, %s runs %s again: %s",
                      self.revision, self._where, before.label, what)
            raise kind(f"{what} ({self._where} runs {before.label} again)") from e
        self._pushed = True
        if self._sidecar.failed is not None:
            log.warning("%s runs policy revision %s: calls are answered again", self._where, self.revision)
        self._sidecar.failed = None

    def _push(self) -> None:
        if self._config.bundle is not None:
            return  # the sidecar's bundle plugin owns the policies; evaluate() checks its revision
        sidecar = self._sidecar
        with sidecar.lock:
            if self._pushed and sidecar.failed is None:
                return
            if self._superseded:
                raise PolicyError("the policy changed while this call was decided (a reload swapped it in); retry")
            failed = sidecar.failed
            try:
                self._push_locked()
            except PolicyError as e:
                if failed is None:
                    raise
                log.critical("%s runs no complete policy set (%s); this call is blocked: %s", self._where, failed, e)
                raise EngineUnavailable(f"{self._where} runs no complete policy set ({failed}); every call is "
                                        f"blocked until a push succeeds: {e}") from e

    def _after_restart(self) -> None:
        """The supervised OPA was restarted: give it this engine's set again
        (push mode) or check its bundle; a failure is logged, and the next
        call tries again."""
        try:
            if self._config.bundle is not None:
                self._verify_bundle()
                return
            with self._sidecar.lock:
                if self._superseded:
                    return
                self._pushed = False
                self._push_locked()
            log.warning("policy revision %s pushed to the restarted OPA sidecar", self.revision)
        except PolicyError as e:
            log.error("restarted OPA sidecar does not run policy revision %s yet: %s", self.revision, e)

    def evaluate(self, policy_input: dict[str, Any]) -> Any:
        process = self._sidecar.process
        down = process.down_reason() if process is not None else None
        if down is not None:
            raise EngineUnavailable(down)
        self._push()
        try:
            if self._config.bundle is None:
                answer, revision = self._query(policy_input)
                if not revision:
                    self._pushed = False  # a fresh sidecar: push again before the next call
                    raise EngineUnavailable(f"{self._where} has no AECL policy loaded (restarted?); it is "
                                            "pushed again for the next call")
                if revision != self.revision:
                    raise PolicyError(
                        f"{self._where} runs policy revision {revision or 'none'}, not this service's "
                        f"{self.revision} (a push in progress, a reload, or another service on the same sidecar)")
            else:
                answer, revisions = self._query(policy_input)
                self._check_revisions(revisions)
        except _Timeout as e:
            raise EngineUnavailable(f"OPA did not answer within {self._config.timeout_s}s") from e
        except OSError as e:
            self._pushed = False  # a restarted sidecar comes back without our policies
            raise EngineUnavailable(f"{self._where} is unavailable: {e}") from e
        if not isinstance(answer, dict):
            raise MalformedDecision("OPA answered with a non-object")
        if "result" not in answer:
            self._pushed = False
            raise MalformedDecision("policy returned no decision (undefined)")
        return answer["result"]

    def derive(self, policy_set: PolicySet) -> OpaEngine:
        """An engine for a new policy set on the same sidecar (hot reload).
        It takes the sidecar over (and a supervised OPA process with it, so
        closing this one later leaves it running); if the sidecar refuses the
        new set, this engine stays in force and the sidecar runs its set."""
        return OpaEngine(policy_set, self._config, _sidecar=self._sidecar)

    def _close_connections(self) -> None:
        self._http.close()

    def close(self) -> None:
        self._close_connections()
        if self._sidecar.owner is self and self._sidecar.process is not None:
            self._sidecar.process.stop()


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


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"status {returncode} (killed by {name})"
    return f"status {returncode}"


class OpaProcess:
    """A local `opa run --server`, started and stopped with the service.

    With a bundle, OPA's bundle plugin loads it from a file:// URL (config
    `bundles.aecl.resource`), exactly as a fleet sidecar loads it from a bundle
    server, and start() waits until the bundle is activated.

    supervise() restarts it whenever it exits without stop(): after 0.1 s,
    doubling up to 5 s while it keeps failing, each restart logged at WARNING
    with the exit status. down_reason() says why it is not serving meanwhile."""

    RESTART_DELAY_S = 0.1
    RESTART_DELAY_MAX_S = 5.0
    # A process that ran this long resets the backoff: it was not a crash loop.
    STABLE_S = 10.0

    def __init__(self, binary: str, host: str, port: int, bundle: Path | None = None) -> None:
        self.binary, self.host, self.port, self.bundle = binary, host, port, bundle
        self._proc: subprocess.Popen | None = None
        self._stderr: Any = None
        self._started_at = 0.0
        self._lock = threading.Lock()  # guards _proc against stop() during a restart
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._down: str | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, wait_s: float = 15.0) -> None:
        self._stopping.clear()
        self._launch(wait_s)

    def _launch(self, wait_s: float) -> None:
        args = [self.binary, "run", "--server", "--addr", f"{self.host}:{self.port}",
                "--disable-telemetry", "--log-level", "error"]
        config_file = None
        if self.bundle is not None:
            bundles = {DATA_ROOT[0]: {"resource": Path(self.bundle).resolve().as_uri(), "persist": False}}
            with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="opa-config-", delete=False) as f:
                json.dump({"bundles": bundles}, f)
            config_file = f.name
            args += ["--config-file", config_file]
        try:
            # stderr to a file, not a pipe: nobody reads a long-running OPA's
            # stderr, and a full pipe would stall it.
            # It lives as long as the process: closed when the next one starts or at stop().
            stderr = tempfile.TemporaryFile()  # noqa: SIM115
            with self._lock:
                if self._stopping.is_set():
                    stderr.close()
                    raise ConfigError("opa is being stopped")
                try:
                    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=stderr)
                except BaseException:
                    stderr.close()
                    raise
                if self._stderr is not None:
                    self._stderr.close()
                self._proc, self._stderr, self._started_at = proc, stderr, time.monotonic()
            self._wait_ready(proc, stderr, wait_s)
        finally:
            if config_file:
                os.unlink(config_file)  # OPA reads its config once, at startup

    @staticmethod
    def _stderr_text(stderr: Any) -> str:
        try:
            stderr.seek(0)
            return stderr.read().decode(errors="replace").strip()[-2000:]
        except (OSError, ValueError):
            return ""

    def _wait_ready(self, proc: subprocess.Popen, stderr: Any, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ConfigError(f"opa exited at startup with {_exit_status(proc.returncode)}: "
                                  f"{self._stderr_text(stderr)}")
            if self._ready():
                return
            time.sleep(0.05)
        self._terminate(proc)
        err = self._stderr_text(stderr)
        what = f"activate bundle {self.bundle}" if self.bundle is not None else f"listen on {self.host}:{self.port}"
        raise ConfigError(f"opa did not {what} within {wait_s}s" + (f": {err}" if err else ""))

    def _ready(self) -> bool:
        try:
            if self.bundle is None:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            # /health?bundles is 200 only once every configured bundle is activated.
            conn = http.client.HTTPConnection(self.host, self.port, timeout=0.2)
            try:
                conn.request("GET", "/health?bundles")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def supervise(self, on_restart: Callable[[], None] | None = None) -> None:
        """Restart the process whenever it exits on its own; `on_restart` runs
        after each restart (re-push the policy), before calls are let through."""
        if self._watcher is not None:
            return
        self._watcher = threading.Thread(target=self._watch, args=(on_restart,), name=f"opa-supervisor-{self.port}",
                                         daemon=True)
        self._watcher.start()

    def down_reason(self) -> str | None:
        """Why a supervised OPA is not serving now (exited, being restarted), or None."""
        return self._down

    def _watch(self, on_restart: Callable[[], None] | None) -> None:
        delay = self.RESTART_DELAY_S
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            status = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - self._started_at >= self.STABLE_S:
                delay = self.RESTART_DELAY_S
            exited = f"the supervised OPA (pid {proc.pid}) exited with {_exit_status(status)}"
            self._down = f"{exited}; every call is blocked until it is restarted"
            attempt = 0
            while True:
                attempt += 1
                log.warning("%s; restarting it in %.1fs (attempt %d)", exited, delay, attempt)
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, self.RESTART_DELAY_MAX_S)
                try:
                    self._launch(15.0)
                except (ConfigError, OSError) as e:
                    if self._stopping.is_set():
                        return
                    self._down = f"{exited} and could not be restarted yet ({e}); every call is blocked until it is"
                    log.error("supervised OPA could not be restarted: %s", e)
                    continue
                break
            self.restarts += 1
            log.warning("supervised OPA restarted as pid %d (the previous one, pid %d, exited with %s)",
                        self._proc.pid, proc.pid, _exit_status(status))
            if on_restart is not None and not self._stopping.is_set():
                try:
                    on_restart()
                except Exception:
                    log.exception("after restarting the supervised OPA")
            self._down = None

    @staticmethod
    def _terminate(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            self._terminate(proc)
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(30)
        with self._lock:
            if self._stderr is not None and (self._proc is None or self._proc.poll() is not None):
                self._stderr.close()
                self._stderr = None
