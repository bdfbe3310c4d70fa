"""Operating `aecl serve` and `make run`: the service prints what it actually
serves (addresses as bound, metrics, audit log, engine, policy revision), the
listen addresses can be set on the command line, a busy port says how to
change it, and `make run CONFIG=...` makes the keys that config names."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from tests.conftest import EXAMPLES, REPO, demo_connectors, free_port, write_config

BANNER_RE = re.compile(r"^AECL serving on (?P<host>[^\s]+):(?P<port>\d+) \((?P<transport>[^)]*)\)")


def read_banner(proc: subprocess.Popen, timeout: float = 60) -> dict[str, str]:
    """The banner's lines as {"address": ..., "transport": ..., "config": ...,
    "engine": ..., ...}, up to its last line (`keys:`, as every config here
    has a credentials_dir)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    banner: dict[str, str] = {}
    buf = b""
    while "keys" not in banner:
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(left):
            raise AssertionError(f"no banner within {timeout} s; so far: {banner}")
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            raise AssertionError(f"the service exited (status {proc.wait()}) before its banner: {banner}")
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.decode()
            m = BANNER_RE.match(line)
            if m:
                banner["address"] = f"{m['host']}:{m['port']}"
                banner["transport"] = m["transport"]
            elif line.startswith("  ") and ":" in line:
                key, _, value = line.strip().partition(":")
                banner[key] = value.strip()
    return banner


def stop(proc: subprocess.Popen, *, group: bool = False) -> None:
    if proc.poll() is None:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
            proc.wait()


def serve(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "enforcer", "serve", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def key_of(credentials_dir: Path, principal_id: str) -> str:
    """The API key provisioning wrote for a principal (<dir>/<id>.key)."""
    return (credentials_dir / f"{principal_id}.key").read_text().strip()


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_flags_override_the_config_and_the_banner_shows_what_is_bound(tmp_path):
    config_port, config_metrics = free_port(), free_port()
    config = write_config(tmp_path, listen=f"127.0.0.1:{config_port}",
                          metrics={"listen": f"127.0.0.1:{config_metrics}"})
    proc = serve("--config", str(config), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
    try:
        banner = read_banner(proc)
        host, port = banner["address"].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) not in (0, config_port)
        assert refused(config_port) and refused(config_metrics)  # the flags won over the config
        creds = tmp_path / "credentials"
        with grpc.insecure_channel(banner["address"]) as channel:
            status = pb_grpc.AdminServiceStub(channel).GetPolicyStatus(
                pb.GetPolicyStatusRequest(), timeout=10, metadata=bearer(key_of(creds, "admin")))
            assert pb_grpc.EnforcerServiceStub(channel).StartTask(
                pb.StartTaskRequest(agent_id="finance_agent_v2", declared_goal="read",
                                    credential=key_of(creds, "finance_agent_v2")), timeout=10).task_id
        assert banner["transport"] == "gRPC, plaintext, loopback only"
        assert banner["engine"] == f"embedded, policy {status.policy_revision}"
        assert banner["config"] == str(config)
        audit = str(tmp_path / "audit.jsonl")
        assert banner["audit"] == audit
        assert banner["verify"] == f"aecl verify --log {audit} --pubkey {tmp_path / 'keys' / 'audit.pub'}"
        m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/metrics", banner["metrics"])
        assert m and int(m[1]) != config_metrics
        body = urllib.request.urlopen(banner["metrics"], timeout=10).read().decode()
        assert "aecl_actions_total" in body
        assert banner["keys"].startswith(f"{creds} ")
    finally:
        stop(proc)


def test_metrics_can_be_turned_off_from_the_command_line(tmp_path):
    config = write_config(tmp_path, metrics={"listen": f"127.0.0.1:{free_port()}"})
    proc = serve("--config", str(config), "--listen", "127.0.0.1:0", "--metrics-listen", "off")
    try:
        assert read_banner(proc)["metrics"] == "off"
    finally:
        stop(proc)


def _busy() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def test_a_busy_port_says_which_key_or_flag_changes_it(tmp_path):
    with _busy() as busy:
        port = busy.getsockname()[1]
        config = write_config(tmp_path, listen=f"127.0.0.1:{port}")
        r = subprocess.run([sys.executable, "-m", "enforcer", "serve", "--config", str(config)], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"listen: cannot listen on 127.0.0.1:{port}" in r.stderr
    assert f"change `listen` in {config}, or pass `aecl serve --listen HOST:PORT`" in r.stderr
    assert "make run LISTEN=HOST:PORT" in r.stderr


def test_a_busy_metrics_port_says_which_key_or_flag_changes_it(tmp_path):
    with _busy() as busy:
        port = busy.getsockname()[1]
        config = write_config(tmp_path / "c")
        r = subprocess.run([sys.executable, "-m", "enforcer", "serve", "--config", str(config),
                            "--metrics-listen", f"127.0.0.1:{port}"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"metrics.listen: cannot serve metrics on 127.0.0.1:{port}" in r.stderr
    assert f"change `metrics.listen` in {config}, or pass `aecl serve --metrics-listen HOST:PORT`" in r.stderr
    assert "--metrics-listen off" in r.stderr


@pytest.mark.parametrize("flag,value", [("--listen", "50051"), ("--listen", "127.0.0.1:http"),
                                        ("--metrics-listen", "127.0.0.1:70000")])
def test_a_malformed_address_is_a_usage_error(flag, value):
    r = subprocess.run([sys.executable, "-m", "enforcer", "serve", flag, value], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"argument {flag}: expected HOST:PORT" in r.stderr


def test_an_unknown_log_level_is_a_usage_error_listing_the_levels():
    r = subprocess.run([sys.executable, "-m", "enforcer", "--log-level", "LOUD", "serve"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "argument --log-level: unknown level 'LOUD'; choose one of DEBUG, INFO, WARNING, ERROR, CRITICAL" \
        in r.stderr
    ok = subprocess.run([sys.executable, "-m", "enforcer", "--log-level", "warning", "keygen", "--help"],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0  # case does not matter


# -- make ------------------------------------------------------------------------

def own_config(directory: Path) -> Path:
    """A config whose keys, credentials, log and state live beside it
    (relative paths), not under var/."""
    directory.mkdir(parents=True)
    config = {
        "listen": f"127.0.0.1:{free_port()}",
        "plaintext": True,
        "agents_dir": str(EXAMPLES / "agents"), "tool_registry": str(EXAMPLES / "tools.yaml"),
        "policy": {"engine": "embedded", "rego_dir": str(REPO / "rego")},
        "audit": {"path": "log/audit.jsonl", "signing_key": "secrets/k/audit.key"},
        "state": {"sqlite_path": "log/state.db"},
        "identity": {"token_signing_key": "secrets/t/token.key", "credentials_dir": "creds",
                     "approvers": [{"id": "approver"}], "admins": [{"id": "admin"}]},
        "connectors": demo_connectors(directory),
    }
    path = directory / "aecl.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_make_keys_creates_the_key_the_config_names(tmp_path):
    """The audit key pair, the token key and a first API key for every
    principal (agents' manifests, approvers, admins), where the config says."""
    config = own_config(tmp_path / "cfg")
    r = subprocess.run(["make", "--no-print-directory", "keys", f"CONFIG={config}"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    key = tmp_path / "cfg" / "secrets" / "k" / "audit.key"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600 and key.with_name("audit.pub").is_file()
    token_key = tmp_path / "cfg" / "secrets" / "t" / "token.key"
    assert token_key.is_file() and (token_key.stat().st_mode & 0o777) == 0o600
    assert token_key.with_name("token.pub").is_file() and token_key.read_bytes() != key.read_bytes()
    creds = tmp_path / "cfg" / "creds"
    principals = {"finance_agent_v2": "agent", "approver": "approver", "admin": "admin"}
    for pid, kind in principals.items():
        assert (creds / f"{pid}.key").is_file() and ((creds / f"{pid}.key").stat().st_mode & 0o777) == 0o600
        assert key_of(creds, pid).startswith("aecl_")
        assert (creds / "hashes" / f"{kind}.{pid}.yaml").is_file()
    assert key_of(creds, "admin") not in (creds / "hashes" / "admin.admin.yaml").read_text()  # only its hash
    before = {p: p.read_bytes() for p in (key, token_key, *creds.rglob("*")) if p.is_file()}
    again = subprocess.run(["make", "--no-print-directory", "keys", f"CONFIG={config}"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    after = {p: p.read_bytes() for p in (key, token_key, *creds.rglob("*")) if p.is_file()}
    assert after == before  # never replaced, nothing added


def test_make_run_serves_another_config_on_the_address_given(tmp_path):
    config = own_config(tmp_path / "cfg")
    configured = int(yaml.safe_load(config.read_text())["listen"].rsplit(":", 1)[1])
    world = tmp_path / "world"  # make run starts the example world beside the service: not under the repo's var/
    proc = subprocess.Popen(["make", "--no-print-directory", "run", f"CONFIG={config}", "LISTEN=127.0.0.1:0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "AECL_WORLD_DIR": str(world), "AECL_WORLD_PORT": str(free_port())})
    try:
        banner = read_banner(proc, timeout=300)
        port = int(banner["address"].rsplit(":", 1)[1])
        assert port not in (0, configured) and refused(configured)
        assert banner["audit"] == str(tmp_path / "cfg" / "log" / "audit.jsonl")
        assert banner["config"] == str(config)
        assert (tmp_path / "cfg" / "secrets" / "k" / "audit.key").is_file()
        creds = tmp_path / "cfg" / "creds"
        assert banner["keys"].startswith(f"{creds} ")
        with grpc.insecure_channel(banner["address"]) as channel:
            stub = pb_grpc.EnforcerServiceStub(channel)
            started = stub.StartTask(pb.StartTaskRequest(agent_id="finance_agent_v2", declared_goal="read",
                                                         credential=key_of(creds, "finance_agent_v2")), timeout=10)
            assert started.task_id and started.token
            # Without the key `make run` made, no task.
            with pytest.raises(grpc.RpcError) as e:
                stub.StartTask(pb.StartTaskRequest(agent_id="finance_agent_v2", declared_goal="read"), timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # The example world runs beside it, and stops with it.
        urls = json.loads((world / "world.json").read_text())
        with urllib.request.urlopen(f"{urls['records']}/health", timeout=10) as r:
            assert json.loads(r.read()) == {"ok": True}
    finally:
        stop(proc, group=True)
    # The world stops with it (serve.py removes its ports file on the way out).
    for _ in range(200):
        if not (world / "world.json").exists():
            break
        time.sleep(0.05)
    assert not (world / "world.json").exists()
