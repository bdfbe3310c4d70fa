"""One place lists a log's files and reads its lines; a file that cannot be
read is unavailable (retry), a file that reads but does not verify is an
integrity failure (someone must look)."""

from __future__ import annotations

import pytest

from enforcer.audit import files
from enforcer.audit.checkpoint import CheckpointError
from enforcer.audit.keys import generate_keypair, load_public_key, load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.audit.merkle import ProofError
from enforcer.audit.verify import parse_trusted_checkpoint, verify_log
from enforcer.errors import AuditUnavailable, IntegrityError, VerificationError
from enforcer.policy.replay import LogReadError, read_log


def test_sealed_segments_sort_by_first_seq_and_match_only_their_pattern(tmp_path):
    log = tmp_path / "audit.jsonl"
    for name in ["audit.jsonl.seg-000000000200", "audit.jsonl.seg-000000000000", "audit.jsonl.seg-000000000010",
                 "audit.jsonl.seg-12", "audit.jsonl.seg-000000000010.tmp", "other.jsonl.seg-000000000000",
                 "audit.jsonl.checkpoint"]:
        (tmp_path / name).write_text("")
    sealed = ["audit.jsonl.seg-000000000000", "audit.jsonl.seg-000000000010", "audit.jsonl.seg-000000000200"]
    assert [p.name for p in files.sealed_segments(log)] == sealed
    assert [p.name for p in files.log_files(log)] == [*sealed, "audit.jsonl"]
    assert files.segment_path(log, 10) == tmp_path / "audit.jsonl.seg-000000000010"


def test_the_writer_sees_the_same_segments(tmp_path):
    from enforcer.audit import log as log_module

    (tmp_path / "a.jsonl.seg-000000000000").write_text("")
    assert log_module.sealed_segments(tmp_path / "a.jsonl") == files.sealed_segments(tmp_path / "a.jsonl")


def test_lines_across_segments_oldest_first(tmp_path):
    log = tmp_path / "a.jsonl"
    files.segment_path(log, 0).write_bytes(b"one\ntwo\n")
    files.segment_path(log, 2).write_bytes(b"three\n")
    log.write_bytes(b"four\nfive")  # no final newline: still a line
    assert list(files.iter_log_lines(log)) == [b"one", b"two", b"three", b"four", b"five"]


def test_a_missing_file_is_unavailable_not_an_integrity_failure(tmp_path):
    missing = tmp_path / "nope.jsonl"
    for read in (lambda: list(files.iter_log_lines(missing)), lambda: verify_log(missing, []),
                 lambda: list(read_log(missing))):
        with pytest.raises(AuditUnavailable, match="nope.jsonl: cannot read"):
            read()


def test_what_reads_but_does_not_verify_is_an_integrity_failure(tmp_path):
    priv, pub = generate_keypair(tmp_path / "k")
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, load_signing_key(priv), checkpoint_every=10**6, checkpoint_interval_s=3600)
    log.append({"kind": "decision", "i": 0})
    log.close()
    lines = path.read_bytes().splitlines()
    path.write_bytes(lines[0].replace(b'"i":0', b'"i":1') + b"\n" + b"\n".join(lines[1:]) + b"\n")
    with pytest.raises(VerificationError) as e:
        verify_log(path, [load_public_key(pub)])
    assert isinstance(e.value, IntegrityError) and e.value.kind == "hash"
    assert e.value.detail == "leaf_hash does not match the entry's content"
    assert str(e.value) == f"line 1: hash: {e.value.detail}"
    with pytest.raises(IntegrityError, match="the trusted checkpoint is malformed"):
        parse_trusted_checkpoint(b"not a note")
    path.write_bytes(b"{not json\n")
    with pytest.raises(LogReadError) as e:
        list(read_log(path))
    assert isinstance(e.value, IntegrityError) and e.value.line == 1


def test_a_segment_failure_names_the_file_without_repeating_the_prefix(tmp_path):
    priv, pub = generate_keypair(tmp_path / "k")
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, load_signing_key(priv), checkpoint_every=10**6, checkpoint_interval_s=3600)
    log.append({"kind": "decision", "i": 0})
    log.close()
    segment = files.segment_path(path, 0)
    segment.write_bytes(b"{not json\n")
    with pytest.raises(VerificationError) as e:
        verify_log(path, [load_public_key(pub)])
    assert (e.value.line, e.value.kind) == (1, "malformed")
    assert e.value.detail.startswith(f"in {segment.name}: not JSON:")
    assert str(e.value) == f"line 1: malformed: {e.value.detail}"


def test_audit_error_families():
    assert issubclass(CheckpointError, IntegrityError) and issubclass(ProofError, IntegrityError)
    assert not issubclass(AuditUnavailable, IntegrityError)
