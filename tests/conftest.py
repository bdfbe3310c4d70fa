"""Shared fixtures: real keys, real config files, a real service process."""

from __future__ import annotations

import json
import os
import secrets
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
from enforcer.config import load_config
from enforcer.identity.provision import provision_demo
from tests.auth_client import AgentAuth, BearerKey

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


def demo_connectors(directory: Path, world: dict[str, str] | None = None) -> dict:
    """The demo config's connectors (examples/aecl.yaml), pointed at `world`
    (name -> base URL, as examples/world/serve.py writes them) or, without
    one, at a closed port; the payments credential is `world`'s key file or
    a fresh one under `directory`."""
    demo = yaml.safe_load((EXAMPLES / "aecl.yaml").read_text())
    connectors = demo["connectors"]
    key_file = Path(world["payments_key_file"]) if world else directory / "payments.key"
    if not key_file.exists():
        key_file.write_text(secrets.token_hex(32) + "\n")
        key_file.chmod(0o600)
    for name, c in connectors.items():
        c["base_url"] = (world or {}).get(name, "http://127.0.0.1:9")  # 9: discard, nothing listens
        if "credential" in c:
            c["credential"] = {**c["credential"], "file": str(key_file)}
    return connectors


def write_config(directory: Path, *, world: dict[str, str] | None = None, **overrides) -> Path:
    """A service config over the example manifests and registry, with its
    state, keys, log and credentials under `directory`: a token key, and an
    API key for every agent manifest, the approver and the admin
    (<directory>/credentials/<id>.key), as `make run` makes them."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = directory / "keys"
    if not (keys / "audit.key").exists():
        generate_keypair(keys)
    demo = yaml.safe_load((EXAMPLES / "aecl.yaml").read_text())
    config = {
        "listen": f"127.0.0.1:{free_port()}",
        "agents_dir": str(EXAMPLES / "agents"),
        "tool_registry": str(EXAMPLES / "tools.yaml"),
        "policy": {"engine": "embedded", "rego_dir": str(REPO / "rego"), "history": demo["policy"]["history"]},
        "connectors": demo_connectors(directory, world),
        "audit": {"path": str(directory / "audit.jsonl"), "signing_key": str(keys / "audit.key")},
        "state": {"sqlite_path": str(directory / "state.db")},
        "plaintext": True,
        "identity": {"token_signing_key": str(keys / "token.key"),
                     "credentials_dir": str(directory / "credentials"),
                     "approvers": [{"id": "approver"}], "admins": [{"id": "admin"}]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = directory / "aecl.yaml"
    path.write_text(yaml.safe_dump(config))
    provision(path)
    return path


def provision(config_path: Path) -> None:
    """Keys for every principal that has none yet (after adding a manifest, say)."""
    loaded = load_config(config_path)
    if loaded.agents_dir.is_dir() and loaded.identity.credentials_dir is not None:
        provision_demo(loaded)


def read_keys(credentials_dir: Path) -> dict[str, str]:
    """id -> API key of every <id>.key file."""
    return {p.stem: p.read_text().strip() for p in sorted(credentials_dir.glob("*.key"))}


def stop_process(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM (the way an operator stops it), SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
        self.credentials_dir = Path(self.config["identity"]["credentials_dir"])
        self.channel = grpc.insecure_channel(self.address)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            self.stop()
            raise RuntimeError(f"service did not start: {self.stderr_path.read_text()}") from None
        # `stub` authenticates like an agent (its key for StartTask, then the
        # task's token); `bare` sends only what a test gives it.
        self.auth = AgentAuth(read_keys(self.credentials_dir))
        self.stub = pb_grpc.EnforcerServiceStub(grpc.intercept_channel(self.channel, self.auth))
        self.bare = pb_grpc.EnforcerServiceStub(self.channel)
        self.admin = pb_grpc.AdminServiceStub(grpc.intercept_channel(self.channel, BearerKey(self.key("admin"))))

    def key(self, principal_id: str) -> str:
        """The API key `make run`-style provisioning wrote for a principal."""
        return (self.credentials_dir / f"{principal_id}.key").read_text().strip()

    def refresh_keys(self) -> None:
        """After provisioning keys for agents added while running."""
        self.auth.keys.update(read_keys(self.credentials_dir))

    def log_lines(self) -> list[str]:
        return self.audit_path.read_text().splitlines()

    def stop(self) -> None:
        self.channel.close()
        stop_process(self.proc)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    svc = Service(write_config(tmp_path_factory.mktemp("svc")))
    yield svc
    svc.stop()


class World:
    """examples/world/serve.py as a child process, on free ports."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ports_file = directory / "world.json"
        self.proc = subprocess.Popen([sys.executable, str(EXAMPLES / "world" / "serve.py"), "--dir", str(directory),
                                      "--ports-file", str(self.ports_file)],
                                     stdout=subprocess.PIPE, stderr=open(directory / "world.log", "wb"))
        line = self.proc.stdout.readline().decode()
        if not line.startswith("ready"):
            self.stop()
            raise RuntimeError(f"the example world did not start: {(directory / 'world.log').read_text()}")
        self.urls: dict[str, str] = json.loads(self.ports_file.read_text())

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    w = World(tmp_path_factory.mktemp("world"))
    yield w
    w.stop()


def require_bwrap() -> None:
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is not installed: run scripts/setup.sh (make test does)")
