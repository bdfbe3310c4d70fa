"""`aecl credentials` on real files, and `aecl admin` against a real service."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys

import yaml

from tests.conftest import REPO, Service, write_config

AGENT = "finance_agent_v2"


def aecl(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=env)


def test_add_agent_key_prints_it_once_and_keeps_only_its_hash(tmp_path):
    config = write_config(tmp_path)
    r = aecl("credentials", "add-agent-key", AGENT, "--config", str(config))
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert key.startswith("aecl_") and len(key.split("_", 2)[2]) == 43
    hashes = tmp_path / "credentials" / "hashes" / f"agent.{AGENT}.yaml"
    doc = yaml.safe_load(hashes.read_text())
    assert hashlib.sha256(key.encode()).hexdigest() in [k["sha256"] for k in doc["api_keys"]]
    assert key not in hashes.read_text()
    assert stat.S_IMODE(hashes.stat().st_mode) == 0o600
    listed = aecl("credentials", "list", "--json", "--config", str(config))
    ids = [k["key_id"] for k in json.loads(listed.stdout)["keys"] if k["id"] == AGENT]
    assert key.split("_")[1] in ids and key not in listed.stdout


def test_revoke_removes_the_hash_and_a_second_revoke_says_it_is_gone(tmp_path):
    config = write_config(tmp_path)
    key_id = (tmp_path / "credentials" / f"{AGENT}.key").read_text().split("_")[1]
    r = aecl("credentials", "revoke", AGENT, key_id, "--config", str(config))
    assert r.returncode == 0, r.stderr
    hashes = yaml.safe_load((tmp_path / "credentials" / "hashes" / f"agent.{AGENT}.yaml").read_text())
    assert key_id not in [k["key_id"] for k in hashes["api_keys"]]
    again = aecl("credentials", "revoke", AGENT, key_id, "--config", str(config))
    assert again.returncode == 2 and f"no key {key_id}" in again.stderr


def test_keys_only_for_known_principals(tmp_path):
    config = write_config(tmp_path)
    r = aecl("credentials", "add-agent-key", "ghost_agent", "--config", str(config))
    assert r.returncode == 2 and "ghost_agent" in r.stderr and "no manifest" in r.stderr
    r = aecl("credentials", "add-key", "--role", "admin", "nobody", "--config", str(config))
    assert r.returncode == 2 and "not in identity.admins" in r.stderr


def test_demo_is_idempotent_and_init_makes_a_private_token_key(tmp_path):
    config = write_config(tmp_path)  # provisions once already
    before = sorted(p.name for p in (tmp_path / "credentials").iterdir())
    r = aecl("credentials", "demo", "--config", str(config))
    assert r.returncode == 0 and "0 new key(s)" in r.stdout
    assert sorted(p.name for p in (tmp_path / "credentials").iterdir()) == before
    for name in ("finance_agent_v2.key", "approver.key", "admin.key"):
        path = tmp_path / "credentials" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text().splitlines()) == 1
    token_key = tmp_path / "keys" / "token.key"
    token_key.unlink()
    r = aecl("credentials", "init", "--config", str(config))
    assert r.returncode == 2 and "stale .pub" in r.stderr  # never a key beside someone else's public key
    (tmp_path / "keys" / "token.pub").unlink()
    r = aecl("credentials", "init", "--config", str(config))
    assert r.returncode == 0 and "created" in r.stdout
    assert stat.S_IMODE(token_key.stat().st_mode) == 0o600


def test_admin_revoke_task_over_the_admin_service(tmp_path):
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

    svc = Service(write_config(tmp_path))
    try:
        t = svc.stub.StartTask(pb.StartTaskRequest(agent_id=AGENT, declared_goal="read invoices"))
        admin_key = tmp_path / "credentials" / "admin.key"
        r = aecl("admin", "revoke-task", t.task_id, "--reason", "test", "--address", svc.address,
                 "--admin-key", str(admin_key))
        assert r.returncode == 0, r.stderr
        assert f"task {t.task_id} revoked" in r.stdout
        # An agent's key is no admin key: refused, with a hint.
        r = aecl("admin", "revoke-agent", AGENT, "--address", svc.address,
                 "--admin-key", str(tmp_path / "credentials" / f"{AGENT}.key"))
        assert r.returncode == 2 and "PERMISSION_DENIED" in r.stderr and "--admin-key" in r.stderr
        kinds = [json.loads(x)["record"]["kind"] for x in svc.log_lines()]
        assert kinds.count("revocation") == 1 and "auth_refused" in kinds
    finally:
        svc.stop()
