"""`aecl tools check` as an operator runs it: every write tool with how it is undone; exit 1 on one undeclared."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.conftest import EXAMPLES, REPO


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", "tools", "check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_the_example_registry_declares_an_undo_for_every_write_tool():
    r = check()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "transfer_funds" in r.stdout and "compensated by reverse_transfer (transfer_id <- rollback_token" in r.stdout
    assert "send_email" in r.stdout and "irreversible: no compensation: human approval is mandatory" in r.stdout
    doc = json.loads(check("--json").stdout)
    by_tool = {row["tool"]: row for row in doc["write_tools"]}
    assert by_tool["update_record"]["args"] == {"record_id": "args.record_id", "snapshot_id": "rollback_token",
                                                "idempotency_key": "idempotency_key"}
    assert doc["undeclared"] == [] and "read_invoice" not in by_tool  # reads need no undo


def test_a_write_tool_that_declares_nothing_fails_the_check(tmp_path):
    registry = yaml.safe_load((EXAMPLES / "tools.yaml").read_text())
    registry["tools_dir"] = str((EXAMPLES / registry["tools_dir"]).resolve()) if "tools_dir" in registry else None
    registry["tools"]["wire_money"] = {"command": ["/bin/true"], "access": "write"}
    if registry["tools_dir"] is None:
        del registry["tools_dir"]
    path = tmp_path / "tools.yaml"
    path.write_text(yaml.safe_dump(registry))
    r = check("--registry", str(path))
    assert r.returncode == 1
    assert "wire_money" in r.stdout and "UNDECLARED" in r.stdout and "wire_money" in r.stderr


def test_two_ways_to_undo_one_tool_do_not_load(tmp_path):
    path = tmp_path / "tools.yaml"
    path.write_text(yaml.safe_dump({"tools": {"x": {"command": ["/bin/true"], "access": "write", "irreversible": True,
                                                    "nothing_to_undo": "because"}}}))
    r = check("--registry", str(path))
    assert r.returncode == 2 and "one way" in r.stderr


def test_help_names_the_three_declarations():
    r = subprocess.run([sys.executable, "-m", "enforcer", "tools", "check", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "compensation" in r.stdout and "irreversibility" in r.stdout
