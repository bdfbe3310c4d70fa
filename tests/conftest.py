"""Shared fixtures: real keys, real config files, a real service process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml

from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.audit.keys import generate_keypair

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


def write_config(directory: Path, **overrides) -> Path:
    """A service config over the example manifests and registry, with its
    state, keys and log under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = directory / "keys"
    if not (keys / "audit.key").exists():
        generate_keypair(keys)
    config = {
        "listen": f"127.0.0.1:{free_port()}",
        "agents_dir": str(EXAMPLES / "agents"),
        "tool_registry": str(EXAMPLES / "tools.yaml"),
        "policy": {"engine": "embedded", "rego_dir": str(REPO / "rego")},
        "audit": {"path": str(directory / "audit.jsonl"), "signing_key": str(keys / "audit.key")},
        "state": {"sqlite_path": str(directory / "state.db")},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = directory / "aecl.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Service:
    """`aecl serve` as a child process, the way an operator runs it."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.config = yaml.safe_load(config_path.read_text())
        self.address = self.config["listen"]
        self.audit_path = Path(self.config["audit"]["path"])
        self.pubkey = Path(self.config["audit"]["signing_key"]).with_name("audit.pub")
        self.stderr_path = config_path.with_name("serve.log")
        env = {**os.environ, "AECL_TEST_SECRET": "s3cr3t-service-env"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "enforcer", "serve", "--config", str(config_path)],
            stdout=subprocess.DEVNULL, stderr=open(self.stderr_path, "wb"), env=env, cwd=REPO,
        )
        self.channel = grpc.insecure_channel(self.address)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            self.stop()
            raise RuntimeError(f"service did not start: {self.stderr_path.read_text()}") from None
        self.stub = pb_grpc.EnforcerServiceStub(self.channel)

    def log_lines(self) -> list[str]:
        return self.audit_path.read_text().splitlines()

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    svc = Service(write_config(tmp_path_factory.mktemp("svc")))
    yield svc
    svc.stop()


def require_bwrap() -> None:
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is not installed: run scripts/setup.sh (make test does)")
