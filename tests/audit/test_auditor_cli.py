"""The auditor's commands (replay, tasks, report, prove, verify-proof,
consistency) verify what they read first and read it through the record
types; they refuse a log that does not verify with the verifier's exit code."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from enforcer.audit.keys import generate_keypair
from enforcer.audit.log import AuditLog
from enforcer.audit.keys import load_signing_key
from tests.audit.stories import AGENT, task_records, write_records, write_story
from tests.conftest import REPO


def aecl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120, input=stdin)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keypair(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def story(tmp_path_factory, keys):
    d = tmp_path_factory.mktemp("story")
    ids = write_story(d / "audit.jsonl", keys[0], tasks=3, max_segment_bytes=6000)
    return d / "audit.jsonl", d / "audit.jsonl.checkpoint", ids


def lines(p: Path) -> list[bytes]:
    return p.read_bytes().splitlines(keepends=True)


def copy_log(src: Path, dst: Path) -> Path:
    shutil.copytree(src.parent, dst)
    for f in dst.iterdir():
        f.chmod(0o640)
    return dst / src.name


def commands(log: Path, pub: Path, task: str, checkpoint: Path | None = None, tmp: Path | None = None):
    cp = ["--checkpoint", checkpoint] if checkpoint else []
    yield "replay", ["audit", "replay", "--log", log, "--pubkey", pub, "--task", task, *cp]
    yield "tasks", ["audit", "tasks", "--log", log, "--pubkey", pub, *cp]
    for fmt in ("html", "csv", "json"):
        yield f"report-{fmt}", ["audit", "report", "--log", log, "--pubkey", pub, "--task", task, "--format", fmt,
                                *cp]
    yield "prove", ["audit", "prove", "--log", log, "--pubkey", pub, "--event", "evt_whatever", *cp]


# -------------------------------------------------------------- refusals


def _tamper(log: Path) -> None:
    active = log
    ls = lines(active)
    ls[0] = ls[0].replace(b'"timestamp":"2', b'"timestamp":"3', 1)
    active.write_bytes(b"".join(ls))


def test_every_reader_refuses_a_tampered_log_with_the_verifiers_code(story, keys, tmp_path):
    log, shipped, ids = story
    bad = copy_log(log, tmp_path / "bad")
    _tamper(bad)
    want = aecl("verify", "--log", bad, "--pubkey", keys[1])
    assert want.returncode == 13
    for name, args in commands(bad, keys[1], ids[0]):
        r = aecl(*args)
        assert r.returncode == 13, (name, r.stdout, r.stderr)
        assert r.stdout == "", name  # not one line of a timeline or report
        assert "hash" in r.stderr and "refusing" in r.stderr, name


def test_every_reader_refuses_a_truncated_log_given_the_checkpoint(story, keys, tmp_path):
    log, shipped, ids = story
    cut = copy_log(log, tmp_path / "cut")
    from enforcer.audit.files import sealed_segments

    sealed_segments(cut)[-1].unlink()
    cut.write_bytes(b"")
    for name, args in commands(cut, keys[1], ids[0], checkpoint=shipped):
        r = aecl(*args)
        assert r.returncode == 17, (name, r.stdout, r.stderr)
        assert r.stdout == "" and "truncated" in r.stderr, name


def test_every_reader_refuses_a_forged_checkpoint(story, keys, tmp_path):
    log, shipped, ids = story
    text, sep, sigs = shipped.read_bytes().rpartition(b"\n\n")
    origin, size, root = text.split(b"\n")
    forged = tmp_path / "forged.checkpoint"
    forged.write_bytes(b"\n".join([origin, str(int(size) + 1).encode(), root]) + sep + sigs)
    for name, args in commands(log, keys[1], ids[0], checkpoint=forged):
        r = aecl(*args)
        assert r.returncode == 16, (name, r.stdout, r.stderr)
        assert "forged" in r.stderr and "truncated" not in r.stderr, name


def test_a_record_that_is_not_an_aecl_record_is_malformed(keys, tmp_path):
    log = tmp_path / "audit.jsonl"
    write_records(log, keys[0], [*task_records("tsk_" + "1" * 32)[:2],
                                 {"kind": "decision", "task_id": "tsk_" + "1" * 32, "i": 3}])
    assert aecl("verify", "--log", log, "--pubkey", keys[1]).returncode == 0  # signed and chained: it verifies
    for name, args in commands(log, keys[1], "tsk_" + "1" * 32):
        r = aecl(*args)
        assert r.returncode == 10, (name, r.stdout, r.stderr)
        assert "line 3: malformed: record: decision record" in r.stderr and r.stdout == "", name


def test_every_reader_verifies_nothing_on_an_empty_or_missing_log(keys, tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    for log in (tmp_path / "empty.jsonl", tmp_path / "missing.jsonl"):
        for name, args in commands(log, keys[1], "tsk_x"):
            r = aecl(*args)
            assert r.returncode == 18, (name, r.stdout, r.stderr)
            assert "nothing was verified" in r.stderr and r.stdout == "", name


def test_the_public_key_is_required(story):
    log, _, ids = story
    for args in (["audit", "replay", "--log", log, "--task", ids[0]], ["audit", "tasks", "--log", log],
                 ["audit", "report", "--log", log], ["audit", "prove", "--log", log, "--event", "e"]):
        r = aecl(*args)
        assert r.returncode == 2 and "--pubkey" in r.stderr


# ---------------------------------------------------------------- replay


def test_replay_tells_agent_arguments_and_dry_run_or_execute(story, keys):
    log, shipped, ids = story
    r = aecl("audit", "replay", "--log", log, "--pubkey", keys[1], "--task", ids[1], "--checkpoint", shipped)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == f"task {ids[1]}: 7 entries, agent {AGENT}"
    assert out[1].startswith("verified: ") and "the log extends the trusted checkpoint" in out[1]
    body = out[2:]
    assert len(body) == 7
    dry, run, execution, esc, blk, rej = body[1:]
    assert "Decide (dry run)" in dry and 'read_invoice {"invoice_id":"INV-1001"}' in dry and AGENT in dry
    assert "Execute" in run and "dry run" not in run and 'read_invoice {"invoice_id":"INV-1002"}' in run
    assert "SUCCEEDED" in execution and "[exit 0]" in execution and "[sandbox sbx_" in execution
    assert "ESCALATE" in esc and "context_rules/context_rules.requires_human_approval" in esc
    assert '"amount":100000' in esc and "[flags large_amount=0.5,untrusted_input=0.2]" in esc
    assert "[approval apr_" in esc and "[untrusted input]" in esc
    assert "BLOCK" in blk and "allowlist/allowlist.blocked" in blk
    assert "REJECTED" in rej and "[error invalid_argument]" in rej
    j = json.loads(aecl("audit", "replay", "--log", log, "--pubkey", keys[1], "--task", ids[1], "--json").stdout)
    assert [e["mode"] for e in j] == ["StartTask", "dry run", "Execute", "Execute", "Execute", "Execute", "Execute"]
    assert [e["kind"] for e in j][:4] == ["task_started", "decision", "decision", "execution"]
    assert all(e["agent_id"] == AGENT for e in j)


def test_replay_does_not_let_the_log_drive_the_terminal(keys, tmp_path):
    log = tmp_path / "audit.jsonl"
    evil = "\x1b[2J\x1b]0;owned\x07\u202eexe.txt\r\nforged line"
    write_story(log, keys[0], tasks=1, payload=evil)
    r = aecl("audit", "replay", "--log", log, "--pubkey", keys[1], "--task", f"tsk_{1:032x}")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout and "\x07" not in r.stdout and "\r" not in r.stdout
    assert "\\u001b[2J" in r.stdout and "\\u202e" in r.stdout  # shown escaped, as JSON does
    assert not any(line.startswith("forged line") for line in r.stdout.splitlines())


def test_replay_into_a_closed_pipe_exits_quietly(keys, tmp_path):
    log = tmp_path / "audit.jsonl"
    task = "tsk_" + "2" * 32
    records = [r for i in range(300) for r in task_records(task, key=f"{i:04d}")]  # ~2,100 lines of timeline
    write_records(log, keys[0], records, every=1000, bulk=True)
    status = tmp_path / "status"
    cmd = (f"{sys.executable} -m enforcer audit replay --log {log} --pubkey {keys[1]} --task {task} | head -n 3; "
           f"echo ${{PIPESTATUS[0]}} > {status}")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert len(r.stdout.splitlines()) == 3
    assert r.stderr == "", r.stderr  # no BrokenPipeError traceback, no "Exception ignored"
    assert status.read_text().strip() == "141"  # as a tool stopped by SIGPIPE


# ----------------------------------------------------------------- tasks


def test_tasks_lists_every_task_with_agent_span_and_outcomes(story, keys):
    log, shipped, ids = story
    r = aecl("audit", "tasks", "--log", log, "--pubkey", keys[1], "--checkpoint", shipped, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [t["task_id"] for t in doc["tasks"]] == ids
    t = doc["tasks"][1]
    assert t["agent_id"] == AGENT and t["goal"] == "Pay vendor invoices" and t["entries"] == 7
    assert t["first"] == "2026-12-01T11:00:00.000000Z" and t["last"] == "2026-12-01T11:00:06.000000Z"
    assert t["outcomes"] == {"approve": 1, "block": 1, "dry-run approve": 1, "escalate": 1, "rejected": 1,
                             "succeeded": 1}
    v = doc["verification"]
    assert v["result"] == "verified" and v["checked_against"]["source"] == "trusted checkpoint"
    assert v["checked_against"]["size"] == int(shipped.read_bytes().split(b"\n")[1])
    text = aecl("audit", "tasks", "--log", log, "--pubkey", keys[1]).stdout.splitlines()
    assert text[0] == f"3 tasks in {log}"
    assert text[2].split() == ["TASK", "AGENT", "FIRST", "LAST", "ENTRIES", "OUTCOMES"]
    row = text[4].split("  ")
    assert row[0] == ids[1] and AGENT in text[4] and "dry-run approve 1, escalate 1" in text[4]


# ---------------------------------------------------------------- report


def report(log, pub, *args) -> subprocess.CompletedProcess:
    return aecl("audit", "report", "--log", log, "--pubkey", pub, *args)


def test_report_json_has_every_call_with_its_story(story, keys):
    log, shipped, ids = story
    r = report(log, keys[1], "--task", ids[0], "--format", "json", "--checkpoint", shipped)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    calls = doc["calls"]
    assert [(c["mode"], c["tool"], c["outcome"]) for c in calls] == [
        ("dry run", "read_invoice", "approve"), ("Execute", "read_invoice", "approve"),
        ("Execute", "transfer_funds", "escalate"), ("Execute", "delete_record", "block"),
        ("Execute", "no_such_tool", "rejected")]
    dry, run, esc, blk, rej = calls
    assert dry["execution"] == "not run (dry run)" and dry["args"] == {"invoice_id": "INV-1001"}
    assert run["execution"].startswith("succeeded, exit 0, 12.5 ms, sandbox sbx_")
    assert esc["gate"] == "context_rules" and esc["rule"] == "context_rules.requires_human_approval"
    assert esc["risk_flags"] == {"large_amount": 0.5, "untrusted_input": 0.2}
    assert esc["approval"].startswith("pending apr_") and esc["execution"] == "not run (awaiting approval)"
    assert esc["context"]["untrusted_input_source"] is True
    assert blk["execution"] == "not run (blocked)" and rej["execution"] == "rejected: invalid_argument"
    v = doc["verification"]
    assert v["checked_against"] == {"source": "trusted checkpoint", "file": str(shipped),
                                    "origin": v["checked_against"]["origin"],
                                    "size": int(shipped.read_bytes().split(b"\n")[1]),
                                    "root": v["checked_against"]["root"]}
    assert len(v["checked_against"]["root"]) == 64 and v["entries"] >= 21 and v["segments"] > 1


def test_report_by_time_range(story, keys):
    log, _, ids = story
    doc = json.loads(report(log, keys[1], "--since", "2026-12-01T11:00:00Z", "--until", "2026-12-01T12:00:00Z",
                            "--format", "json").stdout)
    assert {c["task_id"] for c in doc["calls"]} == {ids[1]} and len(doc["calls"]) == 5
    assert [t["task_id"] for t in doc["tasks"]] == [ids[1]]
    doc = json.loads(report(log, keys[1], "--since", "2026-12-01T11:00:02Z", "--format", "json").stdout)
    assert len(doc["calls"]) == 4 + 5 and doc["calls"][0]["tool"] == "read_invoice"
    r = report(log, keys[1], "--since", "yesterday")
    assert r.returncode == 2 and "not an ISO 8601 time" in r.stderr
    r = report(log, keys[1], "--task", "tsk_nope")
    assert r.returncode == 2 and "no entries for task" in r.stderr


def test_report_csv_is_one_row_per_call_and_never_a_formula(keys, tmp_path):
    log = tmp_path / "audit.jsonl"
    write_story(log, keys[0], tasks=1, payload="=HYPERLINK(\"http://evil.example/\",\"x\")")
    r = report(log, keys[1], "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 5 and rows[2]["tool"] == "transfer_funds"
    assert rows[2]["triggering_input"] == "'=HYPERLINK(\"http://evil.example/\",\"x\")"
    assert json.loads(rows[2]["args"])["reference"].startswith("=HYPERLINK")  # inside JSON: not a formula
    assert rows[2]["risk_flags"] == "large_amount=0.5;untrusted_input=0.2" and rows[0]["mode"] == "dry run"
    assert all(row["verification"] == "verified" and "latest checkpoint in the log" in row["checked_against"]
               for row in rows)


def test_report_out_file_is_private(story, keys, tmp_path):
    log, _, ids = story
    out = tmp_path / "r.html"
    r = report(log, keys[1], "--task", ids[0], "--out", out)
    assert r.returncode == 0 and r.stdout == "" and "wrote" in r.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600" and out.read_text().startswith("<!DOCTYPE html>")


# ---------------------------------------------------------------- proofs


@pytest.fixture
def proof(story, keys, tmp_path):
    log, shipped, _ = story
    event = json.loads(lines(log.parent / "audit.jsonl.seg-000000000000")[2])["record"]["event_id"]
    r = aecl("audit", "prove", "--log", log, "--pubkey", keys[1], "--event", event)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    return doc, shipped


def _hexes(doc):
    yield doc["leaf_hash"]
    yield doc["root"]
    yield from doc["proof"]


def test_prove_prints_hex_for_every_hash(proof):
    doc, _ = proof
    assert doc["leaf_index"] == 2 and doc["proof"]
    for h in _hexes(doc):
        assert re.fullmatch("[0-9a-f]{64}", h), h
    assert json.loads(doc["entry"])["seq"] == 2


def verify_proof(doc, checkpoint, pub, tmp_path) -> subprocess.CompletedProcess:
    p = tmp_path / "proof.json"
    p.write_text(json.dumps(doc))
    return aecl("audit", "verify-proof", "--proof", p, "--checkpoint", checkpoint, "--pubkey", pub)


def _flip_hex(h: str) -> str:
    return ("1" if h[0] != "1" else "2") + h[1:]


def test_verify_proof_accepts_the_proof_prove_printed(proof, keys, tmp_path):
    doc, shipped = proof
    r = verify_proof(doc, shipped, keys[1], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"OK: event \"{doc['event_id']}\" is entry 2 of the tree of checkpoint")
    r = aecl("audit", "verify-proof", "--proof", "-", "--checkpoint", shipped, "--pubkey", keys[1],
             stdin=json.dumps(doc))
    assert r.returncode == 0, r.stderr
    without_entry = {k: v for k, v in doc.items() if k != "entry"}
    assert verify_proof(without_entry, shipped, keys[1], tmp_path).returncode == 0


@pytest.mark.parametrize(("corrupt", "words"), [
    (lambda d: d["proof"].__setitem__(0, _flip_hex(d["proof"][0])), "audit path does not lead"),
    (lambda d: d["proof"].__setitem__(-1, _flip_hex(d["proof"][-1])), "audit path does not lead"),
    (lambda d: d.__setitem__("leaf_hash", _flip_hex(d["leaf_hash"])), "does not hash to the proof's leaf_hash"),
    (lambda d: d.__setitem__("leaf_index", d["leaf_index"] + 1), "the entry is entry 2, the proof says 3"),
    (lambda d: d.__setitem__("tree_size", d["tree_size"] - 1), "made against another checkpoint"),
    (lambda d: d.__setitem__("root", _flip_hex(d["root"])), "made against another checkpoint"),
    (lambda d: d.__setitem__("event_id", "evt_other"), "the entry is not event 'evt_other'"),
    (lambda d: d["proof"].pop(), "audit path does not lead"),
    (lambda d: d["proof"].__setitem__(0, "zz"), "64 hex digits"),
], ids=["flipped-first-hash", "flipped-last-hash", "leaf", "index", "size", "root", "event", "short", "not-hex"])
def test_verify_proof_rejects_a_corrupted_proof(proof, keys, tmp_path, corrupt, words):
    doc, shipped = proof
    corrupt(doc)
    r = verify_proof(doc, shipped, keys[1], tmp_path)
    assert r.returncode == 19, (r.stdout, r.stderr)
    assert "the proof does not verify" in r.stderr and words in r.stderr and r.stdout == ""


def test_verify_proof_rejects_a_wrong_index_by_the_audit_path_alone(proof, keys, tmp_path):
    doc, shipped = proof
    doc = {k: v for k, v in doc.items() if k != "entry"}
    for index in (doc["leaf_index"] + 1, doc["leaf_index"] - 1, 0):
        r = verify_proof({**doc, "leaf_index": index}, shipped, keys[1], tmp_path)
        assert r.returncode == 19 and "audit path does not lead" in r.stderr


def test_verify_proof_against_another_checkpoint(proof, story, keys, tmp_path):
    doc, _ = proof
    log, _, _ = story
    # The same log, grown: its new checkpoint is not the one the proof was made against.
    grown = copy_log(log, tmp_path / "grown")
    write_records(grown, keys[0], task_records("tsk_" + "9" * 32)[:2])
    r = verify_proof(doc, grown.parent / "audit.jsonl.checkpoint", keys[1], tmp_path)
    assert r.returncode == 19 and "made against another checkpoint" in r.stderr
    # Another log's checkpoint, signed by another key: not trusted at all.
    other_priv, other_pub = generate_keypair(tmp_path / "other")
    write_story(tmp_path / "o" / "audit.jsonl", other_priv, tasks=3, max_segment_bytes=6000)
    r = verify_proof(doc, tmp_path / "o" / "audit.jsonl.checkpoint", keys[1], tmp_path)
    assert r.returncode == 16 and "forged" in r.stderr
    r = verify_proof(doc, tmp_path / "o" / "audit.jsonl.checkpoint", other_pub, tmp_path)
    assert r.returncode == 19 and "the proof is for log" in r.stderr


def test_verify_proof_rejects_a_forged_checkpoint(proof, keys, tmp_path):
    doc, shipped = proof
    text, sep, sigs = shipped.read_bytes().rpartition(b"\n\n")
    origin, size, root = text.split(b"\n")
    forged = tmp_path / "forged"
    forged.write_bytes(b"\n".join([origin, str(int(size) + 1).encode(), root]) + sep + sigs)
    r = verify_proof({**doc, "tree_size": int(size) + 1}, forged, keys[1], tmp_path)
    assert r.returncode == 16 and "the trusted checkpoint is forged" in r.stderr


def test_consistency_prints_hex(story, keys, tmp_path):
    log, shipped, _ = story
    early = tmp_path / "early.checkpoint"
    early.write_bytes(shipped.read_bytes())
    grown = copy_log(log, tmp_path / "grown")
    write_records(grown, keys[0], task_records("tsk_" + "8" * 32))
    r = aecl("audit", "consistency", "--log", grown, "--pubkey", keys[1], "--from", early,
             "--to", grown.parent / "audit.jsonl.checkpoint")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for h in [doc["old_root"], doc["new_root"], *doc["proof"]]:
        assert re.fullmatch("[0-9a-f]{64}", h)


# ------------------------------------------------------------------ polish


def _audit_parsers() -> dict[str, argparse.ArgumentParser]:
    from enforcer.cli import build_parser

    def subparsers(p):
        return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices

    top = subparsers(build_parser())
    out = {"verify": top["verify"]}
    out.update({f"audit {name}": p for name, p in subparsers(top["audit"]).items()})
    return out


def test_every_audit_option_has_help_text():
    parsers = _audit_parsers()
    assert set(parsers) >= {"verify", "audit prove", "audit verify-proof", "audit consistency", "audit replay",
                            "audit tasks", "audit report"}
    for name, p in parsers.items():
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help is not argparse.SUPPRESS, (name, action.option_strings)


_BAD_PLURAL = re.compile(r"\b1 (entries|checkpoints|tasks|segments|calls)\b|\b(0|[2-9]|\d\d+) (entry|checkpoint"
                         r"|task|segment|call)\b(?![-_])")


def test_plurals_in_every_line(keys, tmp_path):
    d = tmp_path / "one"
    log = d / "audit.jsonl"
    task = "tsk_" + "3" * 32
    write_records(log, keys[0], task_records(task)[:1], every=1000)  # one record, then the closing checkpoint
    single = tmp_path / "single" / "audit.jsonl"
    single.parent.mkdir()
    single.write_bytes(lines(log)[0])  # one entry, no checkpoint
    outputs = []
    for path, want in ((log, "2 entries, 1 checkpoint"), (single, "1 entry, 0 checkpoints")):
        for r in (aecl("verify", "--log", path, "--pubkey", keys[1]),
                  subprocess.run([sys.executable, str(REPO / "scripts" / "verify"), "--log", str(path), "--pubkey",
                                  str(keys[1])], capture_output=True, text=True)):
            assert r.returncode == 0 and want in r.stdout, r.stdout + r.stderr
            outputs.append(r.stdout + r.stderr)
    r = aecl("audit", "replay", "--log", log, "--pubkey", keys[1], "--task", task)
    assert r.stdout.startswith(f"task {task}: 1 entry, agent {AGENT}\nverified: 2 entries, 1 checkpoint;")
    outputs.append(r.stdout + r.stderr)
    r = aecl("audit", "tasks", "--log", log, "--pubkey", keys[1])
    assert r.stdout.startswith(f"1 task in {log}\n")
    outputs.append(r.stdout + r.stderr)
    r = aecl("audit", "report", "--log", log, "--pubkey", keys[1], "--out", tmp_path / "r.html")
    assert "0 calls; the log verifies (2 entries)" in r.stderr
    outputs += [r.stderr, (tmp_path / "r.html").read_text()]
    r = aecl("verify", "--log", single, "--pubkey", keys[1], "--checkpoint", d / "audit.jsonl.checkpoint")
    assert r.returncode == 0 and "(size 1 of 1 entry)" in r.stdout
    outputs.append(r.stdout)
    two = tmp_path / "two" / "audit.jsonl"
    write_records(two, keys[0], task_records(task)[:2], every=1000)
    two.write_bytes(lines(two)[0])
    r = aecl("verify", "--log", two, "--pubkey", keys[1], "--checkpoint", two.parent / "audit.jsonl.checkpoint")
    assert r.returncode == 17 and "covers 2 entries, the log has 1" in r.stderr
    outputs.append(r.stderr)
    for text in outputs:
        assert not _BAD_PLURAL.search(re.sub(r"<[^>]*>", " ", text)), text


def test_a_dict_log_written_by_hand_is_refused_not_misread(keys, tmp_path):
    """What the old replay printed from any JSON: now only real records are read."""
    log = tmp_path / "audit.jsonl"
    w = AuditLog(log, load_signing_key(keys[0]), checkpoint_every=1000, checkpoint_interval_s=3600)
    w.append({"event_id": "evt_1", "kind": "decision", "task_id": "tsk_1", "outcome": "approve"})
    w.close()
    r = aecl("audit", "replay", "--log", log, "--pubkey", keys[1], "--task", "tsk_1")
    assert r.returncode == 10 and "malformed" in r.stderr and r.stdout == ""
