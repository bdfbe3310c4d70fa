"""The audit writer and verifier together: durability, chaining, recovery."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.audit.keys import load_public_key, load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.audit.canonical import canonical_json
from enforcer.audit.entry import signed_body, split_line
from enforcer.audit.verify import verify_file
from enforcer.errors import AuditError, VerificationError


@pytest.fixture
def log(tmp_path, keypair):
    priv, _ = keypair
    audit = AuditLog(tmp_path / "audit.jsonl", load_signing_key(priv))
    yield audit
    audit.close()


def pub(keypair):
    return [load_public_key(keypair[1])]


def test_appends_chain_and_verify(log, keypair):
    entries = [log.append({"event_id": f"e{i}", "n": i}) for i in range(10)]
    assert [e.seq for e in entries] == list(range(10))
    assert all(b.prev == a.leaf_hash for a, b in zip(entries, entries[1:]))
    assert verify_file(log.path, pub(keypair)) == 10


def test_concurrent_appends_share_fsyncs_and_keep_order(log, keypair, monkeypatch):
    fsyncs = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real(fd)))
    futures = []
    barrier = threading.Barrier(8)

    def worker(k):
        barrier.wait()
        for i in range(50):
            futures.append(log.submit({"worker": k, "i": i}))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = sorted(f.result(timeout=30).seq for f in futures)
    assert seqs == list(range(400))
    assert len(fsyncs) < 400  # group commit: batches share an fsync
    assert verify_file(log.path, pub(keypair)) == 400


def test_reopening_continues_the_chain(tmp_path, keypair):
    key = load_signing_key(keypair[0])
    a = AuditLog(tmp_path / "a.jsonl", key)
    a.append({"x": 1})
    a.close()
    b = AuditLog(tmp_path / "a.jsonl", key)
    assert b.append({"x": 2}).seq == 2  # after the checkpoint written on close
    b.close()
    assert verify_file(tmp_path / "a.jsonl", pub(keypair)) == 4


def test_second_writer_on_the_same_file_is_refused(log, keypair):
    with pytest.raises(AuditError, match="one writer per file"):
        AuditLog(log.path, load_signing_key(keypair[0]))


def test_torn_last_line_is_cut_on_startup(tmp_path, keypair, caplog):
    key = load_signing_key(keypair[0])
    path = tmp_path / "t.jsonl"
    a = AuditLog(path, key)
    for i in range(3):
        a.append({"i": i})
    a.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"prev":"ab')  # a crash mid-write
    b = AuditLog(path, key)
    assert "torn last line" in caplog.text
    assert b.append({"i": 3}).seq == 4  # 3 entries and the checkpoint of the close
    b.close()
    assert verify_file(path, pub(keypair)) == 6


def test_unserialisable_record_fails_alone(log, keypair):
    with pytest.raises(AuditError):
        log.append({"bad": float("nan")})
    log.append({"ok": True})
    assert verify_file(log.path, pub(keypair)) == 1


def test_write_failure_poisons_the_log(log, monkeypatch):
    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(AuditError, match="refusing further appends"):
        log.append({"x": 1})
    monkeypatch.undo()
    with pytest.raises(AuditError):
        log.append({"x": 2})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None)
@given(records=st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=5), min_size=1, max_size=8))
def test_any_json_records_round_trip_and_verify(tmp_path_factory, records):
    from enforcer.audit.keys import generate_keypair

    d = tmp_path_factory.mktemp("prop")
    priv, pubpath = generate_keypair(d / "k")
    audit = AuditLog(d / "l.jsonl", load_signing_key(priv))
    for r in records:
        audit.append(r)
    audit.close()
    assert verify_file(d / "l.jsonl", [load_public_key(pubpath)]) == len(records) + 1  # + the close's checkpoint
    *lines, last = (d / "l.jsonl").read_bytes().rstrip(b"\n").split(b"\n")
    assert json.loads(last)["record"]["kind"] == "checkpoint"
    # JSON has one number type: what is kept is the RFC 8785 form, so a reader
    # re-derives exactly the signed bytes from the parsed record.
    for line, original in zip(lines, records, strict=True):
        entry = json.loads(line)
        body = split_line(line)[0]
        assert signed_body(entry["seq"], entry["prev"], entry["record"]) == body
        assert canonical_json(entry["record"]) == canonical_json(original)


def test_forged_line_signed_with_another_key_is_caught(tmp_path, keypair):
    from enforcer.audit.keys import generate_keypair

    path = tmp_path / "f.jsonl"
    a = AuditLog(path, load_signing_key(keypair[0]))
    a.append({"i": 0})
    a.close()
    other_priv, _ = generate_keypair(tmp_path / "other")
    b = AuditLog(path, load_signing_key(other_priv))  # attacker continues the chain with their key
    b.append({"i": 1})
    b.close()
    with pytest.raises(VerificationError) as err:
        verify_file(path, pub(keypair))
    assert err.value.line == 3 and err.value.kind == "unknown_key"  # line 2: the checkpoint of the close
