"""`make demo`: the before/after story, played against a real service."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, Service, World, free_port, write_config

DEMO = ["examples/demo.py"]


def run_demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *DEMO, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_demo_plays_the_whole_story(tmp_path):
    world = World(tmp_path / "world")
    svc = Service(write_config(tmp_path, world=world.urls))
    try:
        r = run_demo("--target", svc.address, "--key-file", str(svc.credentials_dir / "finance_agent_v2.key"),
                     "--world", str(world.ports_file))
        log = "\n".join(svc.log_lines())
    finally:
        svc.stop()
        world.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PENDING_APPROVAL" in r.stdout and "BLOCK" in r.stdout
    # The escalated transfer: approved by the approver, run once, its output back to the agent.
    assert "approved by approver" in r.stdout and "agent's WaitForExecution: EXECUTED" in r.stdout
    assert '"transfer_id"' in r.stdout
    assert "SUCCEEDED" in r.stdout
    assert "PERMISSION_DENIED" in r.stdout and "UNAUTHENTICATED" in r.stdout
    # Both refusals are in the log; the key is not.
    assert '"refusal":"wrong_agent"' in log.replace(" ", "") and '"refusal":"bad_signature"' in log.replace(" ", "")
    assert svc.key("finance_agent_v2") not in log + r.stdout
    # The world changed as the story says: the record updated, the webhook fired three times.
    assert '"status": "approved"' in r.stdout and '"deliveries": 3' in r.stdout and "(version 2)" in r.stdout
    for gate in ("gate: intent", "gate: history", "gate: scope"):
        assert gate in r.stdout
    assert "aecl verify --log var/audit.jsonl --pubkey var/keys/audit.pub" in r.stdout
    assert "\033[" not in r.stdout  # no colour codes when stdout is not a tty


def test_demo_help_exits_zero():
    r = run_demo("--help")
    assert r.returncode == 0
    assert "--target" in r.stdout and "--timeout" in r.stdout


def test_demo_without_a_key_says_make_run(tmp_path):
    r = run_demo("--key-file", str(tmp_path / "none.key"), timeout=30)
    assert r.returncode == 2
    assert "make run" in r.stdout + r.stderr and "none.key" in r.stderr


def test_demo_without_a_service_says_make_run(tmp_path):
    key = tmp_path / "k.key"
    key.write_text("aecl_000000000000_x\n")
    r = run_demo("--target", f"127.0.0.1:{free_port()}", "--timeout", "1", "--key-file", str(key), timeout=30)
    assert r.returncode == 2
    assert "make run" in r.stdout + r.stderr
