"""`aecl policy status` and `aecl policy reload` against a real `aecl serve`
(its AdminService), and a service on a machine without OPA: it serves the
shipped compiled policy, says at start-up that reloads will be refused, and
refuses them with a clear message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Service, free_port, write_config

AECL = [sys.executable, "-m", "enforcer"]
ADMIN_KEY_ENV = "AECL_ADMIN_KEY_FILE"


def aecl(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The CLI with no administrator key but what a test gives it (not the
    caller's $AECL_ADMIN_KEY_FILE)."""
    base = {k: v for k, v in os.environ.items() if k != ADMIN_KEY_ENV}
    return subprocess.run([*AECL, *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**base, **(env or {})})


def admin_key(svc: Service) -> str:
    return str(svc.credentials_dir / "admin.key")


@pytest.fixture
def service(tmp_path):
    rego = tmp_path / "rego"
    shutil.copytree(REPO / "rego", rego)
    svc = Service(write_config(tmp_path, policy={"rego_dir": str(rego), "reload": {"watch": False}}))
    yield svc, rego
    svc.stop()


def test_status_and_reload_over_the_admin_service(service):
    svc, rego = service
    key = admin_key(svc)
    out = aecl("policy", "status", "--address", svc.address, "--admin-key", key)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines())
    assert lines["engine"] == "embedded" and lines["revision"].startswith("sha256:")
    assert lines["reload"] == "none since start-up"
    before = lines["revision"]

    # The key file may also come from the environment.
    out = aecl("policy", "reload", "--address", svc.address, env={ADMIN_KEY_ENV: key})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("unchanged: policy unchanged")

    # A changed rule: compiled with OPA (not the shipped build), tested, swapped in.
    main = rego / "aecl" / "main.rego"
    main.write_text(main.read_text().replace("all gates passed", "every gate passed"))
    out = aecl("policy", "reload", "--address", svc.address, "--json", "--admin-key", key)
    doc = json.loads(out.stdout)
    assert out.returncode == 0 and doc["applied"] and doc["old_revision"] == before
    status = json.loads(aecl("policy", "status", "--address", svc.address, "--json", "--admin-key", key).stdout)
    assert status["policy_revision"] == doc["new_revision"] != before
    assert status["last_reload"]["applied"] and status["last_reload"]["at"].endswith("Z")

    # A candidate that fails its own tests is rejected: exit 1, the reason, the old revision stays.
    test = rego / "aecl" / "main_test.rego"
    test.write_text(test.read_text() + "\ntest_deny_always_fails if {\n\tfalse\n}\n")
    out = aecl("policy", "reload", "--address", svc.address, "--admin-key", key)
    assert out.returncode == 1
    assert out.stdout.startswith("REJECTED: policy reload rejected") and "test_deny_always_fails" in out.stdout
    status = aecl("policy", "status", "--address", svc.address, "--admin-key", key)
    assert doc["new_revision"] in status.stdout and "reload    rejected at" in status.stdout
    reloads = [r for r in (json.loads(ln)["record"] for ln in svc.log_lines()) if r["kind"] == "policy_reload"]
    # The applied and the rejected reload, each as the administrator (an unchanged one is no entry).
    assert [(r["outcome"], r["principal"]["kind"]) for r in reloads] == [("applied", "admin"), ("rejected", "admin")]


def test_status_and_reload_need_an_administrator(service, tmp_path):
    """No key (run from a directory without the demo's var/credentials), or
    an agent's key: refused, with the hint, logged, and nothing reloaded."""
    svc, rego = service
    main = rego / "aecl" / "main.rego"
    main.write_text(main.read_text().replace("all gates passed", "every gate passed"))
    agent_key = str(svc.credentials_dir / "finance_agent_v2.key")
    for command in ("status", "reload"):
        out = aecl("policy", command, "--address", svc.address, cwd=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert "UNAUTHENTICATED" in out.stderr and "--admin-key FILE" in out.stderr, out.stderr
        out = aecl("policy", command, "--address", svc.address, "--admin-key", agent_key)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert "PERMISSION_DENIED" in out.stderr and "--admin-key FILE" in out.stderr, out.stderr
    missing = aecl("policy", "status", "--address", svc.address, "--admin-key", str(tmp_path / "nope.key"))
    assert missing.returncode == 2 and "nope.key" in missing.stderr and "Traceback" not in missing.stderr
    records = [json.loads(ln)["record"] for ln in svc.log_lines()]
    refused = [r for r in records if r["kind"] == "auth_refused"]
    assert [(r["rpc"], r["status"]) for r in refused] == [
        ("GetPolicyStatus", "UNAUTHENTICATED"), ("GetPolicyStatus", "PERMISSION_DENIED"),
        ("ReloadPolicy", "UNAUTHENTICATED"), ("ReloadPolicy", "PERMISSION_DENIED")]
    assert not any(r["kind"] == "policy_reload" for r in records)
    assert not any(svc.key("finance_agent_v2") in ln for ln in svc.log_lines())  # never the secret


def test_status_and_reload_say_when_nothing_listens():
    address = f"127.0.0.1:{free_port()}"
    for command in ("status", "reload"):
        out = aecl("policy", command, "--address", address, "--timeout", "1")
        assert out.returncode == 2
        assert f"nothing answers at {address}" in out.stderr and "Traceback" not in out.stderr


def _no_opa(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPA_BIN", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("AECL_OPA_CACHE", str(tmp_path / "no-opa"))
    assert not shutil.which("opa")


@pytest.mark.parametrize("run_tests", [True, False])
def test_without_opa_the_service_serves_warns_and_refuses_reloads(tmp_path, monkeypatch, run_tests):
    rego = tmp_path / "rego"
    shutil.copytree(REPO / "rego", rego)
    _no_opa(monkeypatch, tmp_path)
    svc = Service(write_config(tmp_path, policy={"rego_dir": str(rego),
                                                 "reload": {"watch": False, "run_tests": run_tests}}))
    try:
        log = svc.stderr_path.read_text()
        warning = [ln for ln in log.splitlines() if " WARNING " in ln and "no opa binary" in ln]
        assert warning, log
        assert ("every policy reload will be refused" if run_tests else
                "a reload that changes the Rego will be refused") in warning[0]
        # The shipped compiled policy decides without OPA.
        key = admin_key(svc)
        status = json.loads(aecl("policy", "status", "--address", svc.address, "--json", "--admin-key", key).stdout)
        assert status["engine"] == "embedded"

        main = rego / "aecl" / "main.rego"
        main.write_text(main.read_text().replace("all gates passed", "every gate passed"))
        monkeypatch.undo()  # the CLI itself may find OPA; the service still cannot
        out = aecl("policy", "reload", "--address", svc.address, "--admin-key", key)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "no opa binary" in out.stdout
        assert ("to run the candidate's Rego tests" if run_tests else "not the compiled policy shipped with AECL") in out.stdout
        after = json.loads(aecl("policy", "status", "--address", svc.address, "--json", "--admin-key", key).stdout)
        assert after["policy_revision"] == status["policy_revision"]
    finally:
        svc.stop()
    assert os.environ.get("AECL_OPA_CACHE") != str(tmp_path / "no-opa")
