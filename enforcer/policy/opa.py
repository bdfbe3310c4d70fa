"""OPA as a sidecar, over its REST Data API (opa-python-client).

The service pushes its policy set (modules and data) to the sidecar, so the
revision it reports is the one OPA evaluates. When the sidecar is down, slow,
restarted without policies, or answers out of shape, evaluate() raises and the
pipeline blocks the call.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import requests
from opa_client import OpaClient
from opa_client.errors import ConnectionsError

from enforcer.config import OpaConfig
from enforcer.errors import ConfigError, EngineUnavailable, MalformedDecision, PolicyError
from enforcer.policy.policyset import DATA_ROOT, ENTRYPOINT, PolicySet

log = logging.getLogger(__name__)

_PACKAGE, _RULE = ENTRYPOINT.rsplit("/", 1)
REPO_ROOT = Path(__file__).resolve().parents[2]


class OpaEngine:
    name = "opa"
    blocking = True

    def __init__(self, policy_set: PolicySet, config: OpaConfig) -> None:
        self.revision = policy_set.revision
        self._policy_set = policy_set
        self._config = config
        self._process: OpaProcess | None = None
        if config.supervise:
            self._process = OpaProcess(find_opa_binary(config.binary), config.host, config.port)
            self._process.start()
        # retries=0: a dead sidecar must fail fast, not multiply the timeout.
        self._client = OpaClient(host=config.host, port=config.port, retries=0, timeout=config.timeout_s)
        self._pushed = False
        self._push_lock = threading.Lock()
        try:
            self._push()
        except EngineUnavailable as e:
            log.error("OPA sidecar not reachable at startup; every call is blocked until it is: %s", e)

    def _push(self) -> None:
        with self._push_lock:
            if self._pushed:
                return
            try:
                for path, source in self._policy_set.modules.items():
                    self._client.update_policy_from_string(source, f"aecl/{path}", rego_compat=False)
                self._client.update_or_create_data(self._policy_set.config_data, "/".join(DATA_ROOT))
            except (requests.RequestException, ConnectionsError, OSError) as e:
                raise EngineUnavailable(f"OPA at {self._config.host}:{self._config.port} is unavailable: {e}") from e
            except Exception as e:  # the client raises its own types for rejected policies
                raise PolicyError(f"OPA refused the policy set: {e}") from e
            self._pushed = True

    def evaluate(self, policy_input: dict[str, Any]) -> Any:
        self._push()
        try:
            answer = self._client.query_rule(policy_input, _PACKAGE.replace("/", "."), _RULE)
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

    def close(self) -> None:
        self._client.close_connection()
        if self._process is not None:
            self._process.stop()


def find_opa_binary(configured: str | None = None) -> str:
    candidates = [configured, os.environ.get("OPA_BIN"), shutil.which("opa"), str(REPO_ROOT / ".cache/opa/bin/opa")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise ConfigError("no opa binary: set $OPA_BIN, put opa on PATH, or run scripts/build-opa.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpaProcess:
    """A local `opa run --server`, started and stopped with the service."""

    def __init__(self, binary: str, host: str, port: int) -> None:
        self.binary, self.host, self.port = binary, host, port
        self._proc: subprocess.Popen | None = None

    def start(self, wait_s: float = 15.0) -> None:
        self._proc = subprocess.Popen(
            [self.binary, "run", "--server", "--addr", f"{self.host}:{self.port}",
             "--disable-telemetry", "--log-level", "error"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise ConfigError(f"opa exited at startup with status {self._proc.returncode}: {err.strip()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ConfigError(f"opa did not listen on {self.host}:{self.port} within {wait_s}s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
