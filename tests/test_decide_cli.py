"""`aecl decide`: one offline decision, explained, with precise input errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

AECL = [sys.executable, "-m", "enforcer"]


def run(*args, input_doc=None, tmp_path=None):
    argv = [*AECL, "decide", "--config", str(REPO / "examples/aecl.yaml"), *args]
    if input_doc is not None:
        path = tmp_path / "call.json"
        path.write_text(input_doc if isinstance(input_doc, str) else json.dumps(input_doc))
        argv += ["--input", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO)


TRANSFER = {"agent_id": "finance_agent_v2", "tool": "transfer_funds", "args": {"amount": 100000},
            "context": {"untrusted_input_source": True}, "task": {"declared_goal": "transfer funds"}}


def test_explain_names_gate_rule_and_weights(tmp_path):
    out = run("--explain", input_doc=TRANSFER, tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "outcome   ESCALATE" in lines and "gate      context_rules" in lines
    assert "rule      context_rules.requires_human_approval" in lines
    assert "  +0.5   large_amount" in lines and "  +0.2   untrusted_input" in lines
    assert "approval  expires 3600s after the request" in lines


def test_json_output_carries_the_explanation(tmp_path):
    out = run(input_doc={**TRANSFER, "tool": "delete_record", "args": {}}, tmp_path=tmp_path)
    doc = json.loads(out.stdout)
    assert doc["outcome"] == "block" and doc["rule"] == "allowlist.blocked"
    assert doc["risk_weights"] == {"irreversible": 0.3, "affects_production": 0.4, "untrusted_input": 0.2}


@pytest.mark.parametrize(("doc", "words"), [
    ({"tool": "read_invoice"}, "field 'agent_id': Field required"),
    ({"agent_id": 5, "tool": "read_invoice"}, "field 'agent_id'"),
    ({"agent_id": "a", "tool": "read_invoice", "task": {"calls_so_far": -1}}, "field 'task.calls_so_far'"),
    ({"agent_id": "a", "tool": "launch_missiles"}, "field 'tool': unknown tool 'launch_missiles'"),
    ("{not json", "not valid JSON"),
])
def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, doc, words):
    out = run(input_doc=doc, tmp_path=tmp_path)
    assert out.returncode == 2
    assert words in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("command", [[], ["serve"], ["keygen"], ["verify"], ["decide"], ["policy"],
                                     ["policy", "test"], ["policy", "build"], ["policy", "replay"]])
def test_every_command_has_help(command):
    out = subprocess.run([*AECL, *command, "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.startswith("usage: aecl")
