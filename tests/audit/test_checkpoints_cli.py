"""Checkpoints end to end: the writer signs tree heads, `aecl verify` checks
them, and a checkpoint kept elsewhere catches truncation and rollback."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enforcer.audit.checkpoint import NoteVerifier, open_checkpoint
from enforcer.audit.keys import generate_keypair, load_public_key, load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.audit.merkle import root_hash, verify_consistency, verify_inclusion
from enforcer.audit.records import DecisionRecord, timestamp
from tests.conftest import REPO

N = 230


def aecl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", *args], capture_output=True, text=True, cwd=REPO)


def decision(i: int) -> dict:
    """A real decision record (what the service writes), numbered i in its arguments."""
    return DecisionRecord(event_id=f"evt_{i}", timestamp=timestamp(time.time()), agent_id="finance_agent_v2",
                          task_id=f"tsk_{i % 3}", rpc="Execute", action_name="read_invoice",
                          input_payload={"args": {"i": i}}, outcome="approve", reason="ok", gate="risk",
                          rule="risk.within_threshold").to_dict()


def write_log(path: Path, priv: Path, n: int, *, start: int = 0, every: int = 50) -> None:
    log = AuditLog(path, load_signing_key(priv), checkpoint_every=every, checkpoint_interval_s=3600)
    for i in range(start, start + n):
        log.append(decision(i))
    log.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keypair(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture
def log(tmp_path, keys) -> Path:
    path = tmp_path / "audit.jsonl"
    write_log(path, keys[0], N)
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_writer_checkpoints_every_n_and_on_close_and_ships_the_latest(log, keys):
    records = [json.loads(line)["record"] for line in lines(log)]
    sizes = [r["tree_size"] for r in records if r["kind"] == "checkpoint"]
    assert sizes == [50, 101, 152, 203, 234]  # every 50 entries (each checkpoint is an entry too), then close
    shipped = (log.parent / "audit.jsonl.checkpoint").read_bytes()
    origin = shipped.split(b"\n", 1)[0].decode()
    cp, names = open_checkpoint(shipped, [NoteVerifier(origin, load_public_key(keys[1]))])
    assert cp.size == 234 and names == (origin,)
    leaves = [bytes.fromhex(json.loads(line)["leaf_hash"]) for line in lines(log)]
    assert cp.root == root_hash(leaves[:234])


def test_verify_checks_every_checkpoint(log, keys):
    r = aecl("verify", "--log", str(log), "--pubkey", str(keys[1]))
    assert r.returncode == 0, r.stderr
    assert f"{len(lines(log))} entries, 5 checkpoints" in r.stdout


def _edit(log: Path, tmp_path: Path, edit) -> Path:
    ls = lines(log)
    edit(ls)
    out = tmp_path / "edited.jsonl"
    out.write_bytes(b"".join(ls))
    return out


def _flip_note_root(ls: list[bytes]) -> None:
    k = next(i for i, ln in enumerate(ls) if b'"kind":"checkpoint"' in ln)
    entry = json.loads(ls[k])
    root = base64.b64decode(entry["record"]["root"])
    bad = base64.b64encode(bytes([root[0] ^ 1]) + root[1:]).decode()
    ls[k] = ls[k].replace(entry["record"]["root"].encode(), bad.encode())


@pytest.mark.parametrize(("edit", "code", "words"), [
    (lambda ls: ls.__setitem__(7, ls[7].replace(b'"i":7', b'"i":8')), 13, "line 8: hash"),
    (lambda ls: ls.__setitem__(9, ls[9][:-20] + (b"A" if ls[9][-20:-19] != b"A" else b"B") + ls[9][-19:]), 15,
     "line 10: signature"),
    (lambda ls: ls.__delitem__(20), 11, "line 21: sequence"),
    (lambda ls: ls.insert(30, ls[29]), 11, "line 31: sequence"),
    (lambda ls: ls.__setitem__(slice(40, 42), [ls[41], ls[40]]), 11, "line 41: sequence"),
    (_flip_note_root, 13, "line 51: hash"),  # the note is signed, and so is the entry holding it
])
def test_tampering_is_named_with_its_line_and_class(log, keys, tmp_path, edit, code, words):
    r = aecl("verify", "--log", str(_edit(log, tmp_path, edit)), "--pubkey", str(keys[1]))
    assert r.returncode == code, r.stderr
    assert words in r.stderr


def test_forged_line_resigned_with_another_key_is_unknown_key(log, keys, tmp_path):
    other, _ = generate_keypair(tmp_path / "other")
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(log.read_bytes())
    write_log(forged, other, 1, start=999)  # the attacker's writer continues the chain with its own key
    r = aecl("verify", "--log", str(forged), "--pubkey", str(keys[1]))
    assert r.returncode == 14 and f"line {len(lines(log)) + 1}: unknown_key" in r.stderr


def test_truncated_tail_is_caught_only_with_a_later_checkpoint(log, keys, tmp_path):
    shipped = log.parent / "audit.jsonl.checkpoint"
    cut = _edit(log, tmp_path, lambda ls: ls.__delitem__(slice(150, None)))
    assert aecl("verify", "--log", str(cut), "--pubkey", str(keys[1])).returncode == 0  # alone, it looks fine
    r = aecl("verify", "--log", str(cut), "--pubkey", str(keys[1]), "--checkpoint", str(shipped))
    assert r.returncode == 17 and "truncated" in r.stderr and "covers 234 entries, the log has 150" in r.stderr


def test_rewritten_history_is_caught_by_an_earlier_checkpoint(keys, tmp_path):
    honest = tmp_path / "honest" / "audit.jsonl"
    honest.parent.mkdir()
    write_log(honest, keys[0], 60)
    earlier = honest.parent / "audit.jsonl.checkpoint"
    # Someone with the key rewrites the log from scratch: it verifies on its own.
    rewritten = tmp_path / "rewritten" / "audit.jsonl"
    rewritten.parent.mkdir()
    write_log(rewritten, keys[0], 100, start=1)
    assert aecl("verify", "--log", str(rewritten), "--pubkey", str(keys[1])).returncode == 0
    r = aecl("verify", "--log", str(rewritten), "--pubkey", str(keys[1]), "--checkpoint", str(earlier))
    assert r.returncode == 16 and "rolled back or forked" in r.stderr
    later = rewritten.parent / "audit.jsonl.checkpoint"
    r = aecl("audit", "consistency", "--log", str(rewritten), "--pubkey", str(keys[1]),
             "--from", str(earlier), "--to", str(later))
    assert r.returncode == 16 and "not consistent" in r.stderr


def test_consistency_proof_between_two_shipped_checkpoints(keys, tmp_path):
    path = tmp_path / "audit.jsonl"
    write_log(path, keys[0], 40)
    first = tmp_path / "day1.checkpoint"
    first.write_bytes((tmp_path / "audit.jsonl.checkpoint").read_bytes())
    write_log(path, keys[0], 70, start=40)  # the service restarts and goes on
    r = aecl("audit", "consistency", "--log", str(path), "--pubkey", str(keys[1]),
             "--from", str(first), "--to", str(tmp_path / "audit.jsonl.checkpoint"))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    verify_consistency(doc["old_size"], doc["new_size"], bytes.fromhex(doc["old_root"]),
                       bytes.fromhex(doc["new_root"]), [bytes.fromhex(h) for h in doc["proof"]])


def test_prove_prints_an_inclusion_proof_anyone_can_check(log, keys):
    r = aecl("audit", "prove", "--log", str(log), "--pubkey", str(keys[1]), "--event", "evt_123")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["tree_size"] == 234
    verify_inclusion(bytes.fromhex(doc["leaf_hash"]), doc["leaf_index"], doc["tree_size"],
                     [bytes.fromhex(h) for h in doc["proof"]], bytes.fromhex(doc["root"]))
    r = aecl("audit", "prove", "--log", str(log), "--pubkey", str(keys[1]), "--event", "evt_nope")
    assert r.returncode == 2 and "no entry with event id" in r.stderr


def test_replay_tells_a_task_in_order(log, keys):
    r = aecl("audit", "replay", "--log", str(log), "--pubkey", str(keys[1]), "--task", "tsk_1", "--json")
    story = json.loads(r.stdout)
    assert [s["input_payload"]["args"]["i"] for s in story] == [i for i in range(N) if i % 3 == 1]
    text = aecl("audit", "replay", "--log", str(log), "--pubkey", str(keys[1]), "--task", "tsk_1").stdout
    assert text.startswith(f"task tsk_1: {len(story)} entries") and "APPROVE" in text


def test_checkpoint_whose_root_is_not_the_tree_is_a_checkpoint_failure(keys, tmp_path):
    from enforcer.audit.checkpoint import Checkpoint, NoteSigner, sign_checkpoint

    path = tmp_path / "audit.jsonl"
    key = load_signing_key(keys[0])
    log = AuditLog(path, key, checkpoint_every=10**6, checkpoint_interval_s=3600)
    for i in range(5):
        log.append({"i": i})
    # A validly signed note that lies about the tree (a buggy or malicious writer).
    note = sign_checkpoint(Checkpoint(log.origin, 5, b"\x07" * 32), [NoteSigner(log.origin, key)]).decode()
    log.append({"kind": "checkpoint", "timestamp": "2026-12-01T00:00:00.000000Z", "tree_size": 5,
                "root": base64.b64encode(b"\x07" * 32).decode(), "note": note})
    log.close()
    r = aecl("verify", "--log", str(path), "--pubkey", str(keys[1]))
    assert r.returncode == 16 and "line 6: checkpoint" in r.stderr and "not the Merkle root" in r.stderr


def standalone(*args: str) -> subprocess.CompletedProcess:
    """scripts/verify: shares no code with the service, needs only PyNaCl."""
    return subprocess.run([sys.executable, str(REPO / "scripts/verify"), *args], capture_output=True, text=True,
                          cwd="/")


@pytest.mark.parametrize(("edit", "code", "words"), [
    (None, 0, ""),
    (lambda ls: ls.__setitem__(7, ls[7].replace(b'"i":7', b'"i":8')), 13, "line 8: hash"),
    (lambda ls: ls.__delitem__(20), 11, "line 21: sequence"),
    (lambda ls: ls.__setitem__(slice(40, 42), [ls[41], ls[40]]), 11, "line 41: sequence"),
    (lambda ls: ls.__delitem__(slice(150, None)), 17, "line 151: truncated"),
])
def test_standalone_verifier_agrees(log, keys, tmp_path, edit, code, words):
    target = _edit(log, tmp_path, edit) if edit else log
    shipped = log.parent / "audit.jsonl.checkpoint"
    ours = aecl("verify", "--log", str(target), "--pubkey", str(keys[1]), "--checkpoint", str(shipped))
    theirs = standalone("--log", str(target), "--pubkey", str(keys[1]), "--checkpoint", str(shipped))
    assert ours.returncode == theirs.returncode == code, (ours.stderr, theirs.stderr)
    assert words in ours.stderr and words in theirs.stderr


def test_standalone_verifier_checks_checkpoints_in_the_log(log, keys):
    r = standalone("--log", str(log), "--pubkey", str(keys[1]))
    assert r.returncode == 0 and "5 checkpoints verify" in r.stdout
