"""Segments: the log rotates by size into files that are one log, with one
sequence, one chain and one Merkle tree across them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from enforcer.audit.keys import generate_keypair, load_public_key, load_signing_key
from enforcer.audit.log import AuditLog, sealed_segments
from enforcer.audit.merkle import root_hash
from enforcer.audit.records import DecisionRecord, timestamp
from enforcer.audit.verify import log_lines, verify_log
from tests.conftest import REPO


def write(path, priv, n, start=0):
    log = AuditLog(path, load_signing_key(priv), checkpoint_every=10**6, checkpoint_interval_s=3600,
                   max_segment_bytes=16 << 10)
    for i in range(start, start + n):
        log.append(DecisionRecord(event_id=f"evt_{i}", timestamp=timestamp(time.time()), task_id="tsk_a",
                                  agent_id="finance_agent_v2", rpc="Execute", action_name="read_invoice",
                                  input_payload={"args": {"i": i, "pad": "x" * 200}}, outcome="approve",
                                  gate="risk", rule="risk.within_threshold").to_dict())
    log.close()


def test_rotation_seals_segments_that_verify_as_one_log(tmp_path):
    priv, pub = generate_keypair(tmp_path / "k")
    path = tmp_path / "audit.jsonl"
    write(path, priv, 300)
    write(path, priv, 100, start=300)  # a restart continues the last segment's chain
    sealed = sealed_segments(path)
    assert len(sealed) >= 5
    for seg in sealed:
        assert oct(seg.stat().st_mode & 0o777) == "0o440"
        last = json.loads(seg.read_bytes().splitlines()[-1])
        assert last["record"]["kind"] == "checkpoint"  # each segment ends with its tree head
    lines = list(log_lines(path))
    assert [json.loads(ln)["seq"] for ln in lines] == list(range(len(lines)))
    report = verify_log(path, [load_public_key(pub)])
    assert report.entries == len(lines) and report.segments == len(sealed) + 1
    leaves = [bytes.fromhex(json.loads(ln)["leaf_hash"]) for ln in lines]
    assert report.last_checkpoint.root == root_hash(leaves[: report.last_checkpoint.size])


def _aecl_verify(path, pub):
    return subprocess.run([sys.executable, "-m", "enforcer", "verify", "--log", str(path), "--pubkey", str(pub)],
                          capture_output=True, text=True, cwd=REPO)


def test_tampering_in_a_sealed_segment_names_the_file_and_line(tmp_path):
    priv, pub = generate_keypair(tmp_path / "k")
    path = tmp_path / "audit.jsonl"
    write(path, priv, 200)
    seg = sealed_segments(path)[1]
    seg.chmod(0o640)
    lines = seg.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"pad":"x', b'"pad":"y')
    seg.write_bytes(b"".join(lines))
    r = _aecl_verify(path, pub)
    assert r.returncode == 13 and f"line 4: hash: in {seg.name}" in r.stderr


def test_a_deleted_segment_breaks_the_sequence(tmp_path):
    priv, pub = generate_keypair(tmp_path / "k")
    path = tmp_path / "audit.jsonl"
    write(path, priv, 200)
    victim, after = sealed_segments(path)[1:3]
    victim.unlink()
    r = _aecl_verify(path, pub)
    assert r.returncode == 11 and f"line 1: sequence: in {after.name}" in r.stderr


def test_prove_and_replay_read_across_segments(tmp_path):
    priv, pub = generate_keypair(tmp_path / "k")
    path = tmp_path / "audit.jsonl"
    write(path, priv, 150)
    r = subprocess.run([sys.executable, "-m", "enforcer", "audit", "prove", "--log", str(path), "--pubkey", str(pub),
                        "--event", "evt_3"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["leaf_index"] == 3
    r = subprocess.run([sys.executable, "-m", "enforcer", "audit", "replay", "--log", str(path), "--pubkey", str(pub),
                        "--task", "tsk_a", "--json"], capture_output=True, text=True, cwd=REPO)
    assert [s["input_payload"]["args"]["i"] for s in json.loads(r.stdout)] == list(range(150))


def test_policy_replay_reads_every_segment(tmp_path):
    from enforcer.policy.replay import read_log

    priv, _ = generate_keypair(tmp_path / "k")
    path = tmp_path / "audit.jsonl"
    write(path, priv, 150)
    assert len(sealed_segments(path)) > 1
    assert [e["seq"] for e in read_log(path)] == list(range(len(list(log_lines(path)))))
