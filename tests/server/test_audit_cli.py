"""The service's log verifies with `aecl verify`, and tampering with any line
makes it fail naming that line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb


def verify(log: Path, pubkey: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "enforcer", "verify", "--log", str(log), "--pubkey", str(pubkey)],
        capture_output=True, text=True,
    )


@pytest.fixture(scope="module")
def service_log(service, tmp_path_factory):
    task = service.stub.StartTask(pb.StartTaskRequest(agent_id="finance_agent_v2", declared_goal="read")).task_id
    req = pb.DecideRequest(task_id=task, agent_id="finance_agent_v2", call=pb.ToolCall(name="read_invoice"))
    req.call.args.update({"invoice_id": "INV-1001"})
    for _ in range(5):
        service.stub.Decide(req)
    copy = tmp_path_factory.mktemp("logcopy") / "audit.jsonl"
    copy.write_bytes(service.audit_path.read_bytes())
    return copy, service.pubkey


def test_service_log_verifies(service_log):
    log, pub = service_log
    r = verify(log, pub)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK")


def _tampered(log: Path, tmp_path: Path, edit) -> Path:
    lines = log.read_bytes().splitlines(keepends=True)
    edit(lines)
    out = tmp_path / "tampered.jsonl"
    out.write_bytes(b"".join(lines))
    return out


def test_any_changed_byte_is_caught_on_its_line(service_log, tmp_path):
    log, pub = service_log
    n = len(log.read_bytes().splitlines())
    for index in range(n):
        def flip(lines, i=index):
            line = bytearray(lines[i])
            pos = line.index(b'"timestamp":"') + len(b'"timestamp":"')
            line[pos] = ord("9") if line[pos] != ord("9") else ord("8")
            lines[i] = bytes(line)
        r = verify(_tampered(log, tmp_path, flip), pub)
        assert r.returncode == 13, r.stderr
        assert f"line {index + 1}: hash" in r.stderr


def test_changed_signature_is_caught(service_log, tmp_path):
    log, pub = service_log

    def flip_sig(lines):
        line = lines[2].decode()
        i = line.index('"sig":"') + 7
        lines[2] = (line[:i] + ("A" if line[i] != "A" else "B") + line[i + 1:]).encode()

    r = verify(_tampered(log, tmp_path, flip_sig), pub)
    assert r.returncode == 15 and "line 3: signature" in r.stderr


def test_deleted_line_is_caught(service_log, tmp_path):
    log, pub = service_log
    r = verify(_tampered(log, tmp_path, lambda lines: lines.pop(3)), pub)
    assert r.returncode == 11 and "line 4: sequence" in r.stderr


def test_swapped_lines_are_caught(service_log, tmp_path):
    log, pub = service_log

    def swap(lines):
        lines[1], lines[2] = lines[2], lines[1]

    r = verify(_tampered(log, tmp_path, swap), pub)
    assert r.returncode == 11 and "line 2: sequence" in r.stderr


def test_wrong_public_key_is_refused(service_log, tmp_path):
    from enforcer.audit.keys import generate_keypair

    log, _ = service_log
    _, other_pub = generate_keypair(tmp_path / "other")
    r = verify(log, other_pub)
    assert r.returncode == 14 and "line 1: unknown_key" in r.stderr


def aecl(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", *map(str, args)], capture_output=True, text=True)


def test_the_auditor_commands_read_the_service_log(service_log, tmp_path):
    """What the service writes reads back through the record types: its task,
    its dry runs with their arguments, and a report of them."""
    log, pub = service_log
    r = aecl("audit", "tasks", "--log", log, "--pubkey", pub, "--json")
    assert r.returncode == 0, r.stderr
    (task,) = [t for t in json.loads(r.stdout)["tasks"] if t["goal"] == "read"]
    assert task["agent_id"] == "finance_agent_v2" and task["outcomes"].get("dry-run approve") == 5
    r = aecl("audit", "replay", "--log", log, "--pubkey", pub, "--task", task["task_id"])
    assert r.returncode == 0, r.stderr
    dry = [ln for ln in r.stdout.splitlines() if "Decide (dry run)" in ln]
    assert len(dry) == 5 and all('read_invoice {"invoice_id":"INV-1001"}' in ln for ln in dry)
    r = aecl("audit", "report", "--log", log, "--pubkey", pub, "--task", task["task_id"], "--format", "json")
    calls = json.loads(r.stdout)["calls"]
    assert [c["execution"] for c in calls] == ["not run (dry run)"] * 5
