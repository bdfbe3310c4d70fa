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
    # delete_record is compensable (restore_record): not irreversible.
    assert doc["risk_weights"] == {"affects_production": 0.4, "untrusted_input": 0.2}


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
                                     ["policy", "test"], ["policy", "build"], ["policy", "replay"],
                                     ["policy", "check"], ["policy", "status"], ["policy", "reload"]])
def test_every_command_has_help(command):
    out = subprocess.run([*AECL, *command, "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.startswith("usage: aecl")


REPORT = {"agent_id": "finance_agent_v2", "tool": "generate_payment_report", "args": {"vendor_id": "V-17"}}


def test_without_a_task_the_call_declares_itself_and_the_rule_under_test_decides(tmp_path):
    """A write with no task used to stop at the intent gate whatever the rule."""
    out = run(input_doc=REPORT, tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["outcome"], doc["gate"]) == ("approve", "risk")
    assert "no task given" in out.stderr and "--goal" in out.stderr
    # The rule under test still decides: a blocked action stays blocked.
    blocked = json.loads(run(input_doc={**REPORT, "tool": "delete_record", "args": {"record_id": "r"}},
                             tmp_path=tmp_path).stdout)
    assert (blocked["outcome"], blocked["gate"]) == ("block", "allowlist")


@pytest.mark.parametrize(("flags", "outcome", "gate"), [
    (["--goal", "Please generate a payment report"], "approve", "risk"),
    (["--goal", "summarise invoices"], "block", "intent"),
    (["--declare", "read_invoice"], "block", "intent"),
    (["--declare", "generate_payment_report"], "approve", "risk"),
    (["--declare", "", "--goal", "generate payment report"], "approve", "risk"),
    (["--declare", "generate_payment_report", "--calls", "50"], "block", "limits"),
])
def test_task_flags_state_the_task(tmp_path, flags, outcome, gate):
    out = run(*flags, input_doc=REPORT, tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["outcome"], doc["gate"]) == (outcome, gate), doc
    assert "no task given" not in out.stderr


def test_task_flags_override_the_files_task(tmp_path):
    doc = {**REPORT, "task": {"declared_goal": "read invoices"}}
    assert json.loads(run(input_doc=doc, tmp_path=tmp_path).stdout)["gate"] == "intent"
    out = run("--goal", "generate the payment report", input_doc=doc, tmp_path=tmp_path)
    assert json.loads(out.stdout)["outcome"] == "approve"


def test_engine_opa_without_a_sidecar_is_an_error_not_a_block(tmp_path):
    config = tmp_path / "aecl.yaml"
    text = (REPO / "examples/aecl.yaml").read_text()
    config.write_text(text)
    # The example config's relative paths resolve against its directory: keep them valid.
    for name in ("agents", "tools.yaml", "tools"):
        (tmp_path / name).symlink_to(REPO / "examples" / name)
    from tests.conftest import free_port

    import yaml

    doc = yaml.safe_load(text)
    doc.setdefault("policy", {})["rego_dir"] = str(REPO / "rego")
    doc["policy"]["opa"] = {"port": free_port(), "timeout_s": 0.5}
    config.write_text(yaml.safe_dump(doc))
    path = tmp_path / "call.json"
    path.write_text(json.dumps(REPORT))
    out = subprocess.run([*AECL, "decide", "--config", str(config), "--input", str(path), "--engine", "opa"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    assert "the OPA sidecar at 127.0.0.1:" in out.stderr and "cannot decide this call" in out.stderr
    assert "supervise" in out.stderr and "Traceback" not in out.stderr
    assert '"outcome"' not in out.stdout


def test_engine_opa_with_a_supervised_sidecar_decides_like_embedded(tmp_path):
    import yaml

    from tests.conftest import free_port

    doc = yaml.safe_load((REPO / "examples/aecl.yaml").read_text())
    for key in ("agents_dir", "tool_registry"):
        doc[key] = str((REPO / "examples" / doc[key]).resolve())
    doc["policy"]["rego_dir"] = str(REPO / "rego")
    doc["policy"]["opa"] = {"port": free_port(), "supervise": True, "timeout_s": 5}
    for section, key in (("audit", "path"), ("audit", "signing_key"), ("state", "sqlite_path")):
        doc[section][key] = str(tmp_path / key)
    config = tmp_path / "aecl.yaml"
    config.write_text(yaml.safe_dump(doc))
    path = tmp_path / "call.json"
    path.write_text(json.dumps(REPORT))
    outs = [subprocess.run([*AECL, "decide", "--config", str(config), "--input", str(path), "--engine", engine],
                           capture_output=True, text=True, cwd=REPO) for engine in ("opa", "embedded")]
    assert [o.returncode for o in outs] == [0, 0], [o.stderr for o in outs]
    a, b = (json.loads(o.stdout) for o in outs)
    assert a == b and a["outcome"] == "approve"
