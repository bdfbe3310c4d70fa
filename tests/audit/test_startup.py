"""The writer checks the log's history before appending (enforcer.audit.startup):
edited, cut, reordered or deleted history stops it with an IntegrityError
naming the file, and the shipped checkpoint is never overwritten by a
smaller tree."""

from __future__ import annotations

import pytest

from enforcer.audit.keys import generate_keypair, load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.errors import IntegrityError


@pytest.fixture
def key(tmp_path):
    return load_signing_key(generate_keypair(tmp_path / "keys")[0])


def write(path, key, n, every=10, **kw):
    log = AuditLog(path, key, checkpoint_every=every, checkpoint_interval_s=3600, **kw)
    for i in range(n):
        log.append({"kind": "test", "i": i, "pad": "x" * 40})
    log.close()


def lines(path):
    return path.read_bytes().splitlines(keepends=True)


def test_a_clean_log_reopens_and_continues(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 25)
    log = AuditLog(path, key)
    assert log.append({"i": "next"}).seq == log.size - 1
    log.close()


def test_a_byte_flipped_in_any_entry_of_the_active_segment_stops_the_writer(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 25)  # checkpoints every 10 and at close
    ls = lines(path)
    ls[3] = ls[3].replace(b'"pad":"x', b'"pad":"y', 1)  # covered by a checkpoint, leaf hash untouched
    path.write_bytes(b"".join(ls))
    with pytest.raises(IntegrityError, match="entry 3 was changed"):
        AuditLog(path, key)


def test_an_entry_past_every_checkpoint_with_a_flipped_byte_stops_the_writer(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 5, every=1000)
    ls = lines(path)
    # Drop the close checkpoint so the entries are past every checkpoint,
    # and restore the shipped file's size to match: only the flip is wrong.
    (tmp_path / "audit.jsonl.checkpoint").unlink()
    ls = ls[:-1]
    ls[2] = ls[2].replace(b'"pad":"x', b'"pad":"z', 1)
    path.write_bytes(b"".join(ls))
    with pytest.raises(IntegrityError, match="entry 2 was changed"):
        AuditLog(path, key)


def test_a_deleted_line_stops_the_writer(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 25)
    ls = lines(path)
    del ls[7]
    path.write_bytes(b"".join(ls))
    with pytest.raises(IntegrityError, match="entry 7"):
        AuditLog(path, key)


def test_swapped_lines_stop_the_writer(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 25)
    ls = lines(path)
    ls[3], ls[4] = ls[4], ls[3]
    path.write_bytes(b"".join(ls))
    with pytest.raises(IntegrityError, match="entry 3"):
        AuditLog(path, key)


def test_an_edited_leaf_hash_is_caught(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 25)
    ls = lines(path)
    head, _, rest = ls[4].partition(b'"leaf_hash":"')
    ls[4] = head + b'"leaf_hash":"' + (b"0" if rest[:1] != b"0" else b"1") + rest[1:]
    path.write_bytes(b"".join(ls))
    with pytest.raises(IntegrityError, match="entry 4 was changed"):
        AuditLog(path, key)


def test_acknowledged_entries_cut_from_the_end_stop_the_writer(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 25)
    shipped = (tmp_path / "audit.jsonl.checkpoint").read_bytes()
    path.write_bytes(b"".join(lines(path)[:-6]))
    with pytest.raises(IntegrityError, match="acknowledged entries are gone"):
        AuditLog(path, key)
    assert (tmp_path / "audit.jsonl.checkpoint").read_bytes() == shipped  # never overwritten


def test_a_deleted_log_stops_the_writer_and_keeps_its_checkpoint(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 25)
    shipped = (tmp_path / "audit.jsonl.checkpoint").read_bytes()
    path.unlink()
    with pytest.raises(IntegrityError, match="has 0 entries but its checkpoint file"):
        AuditLog(path, key)
    assert (tmp_path / "audit.jsonl.checkpoint").read_bytes() == shipped


def test_a_new_origin_starts_a_new_log_and_retires_the_old_checkpoint(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 25)
    shipped = (tmp_path / "audit.jsonl.checkpoint").read_bytes()
    path.unlink()
    log = AuditLog(path, key, origin="aecl/audit/second-life")
    assert log.append({"i": 0}).seq == 0
    log.close()
    [retired] = tmp_path.glob("audit.jsonl.checkpoint.*.retired")
    assert retired.read_bytes() == shipped
    assert (tmp_path / "audit.jsonl.checkpoint").read_bytes().startswith(b"aecl/audit/second-life\n")


def test_a_replaced_log_of_the_same_size_is_caught_by_the_checkpoint_root(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 25)
    shipped = (tmp_path / "audit.jsonl.checkpoint").read_bytes()
    path.unlink()
    (tmp_path / "audit.jsonl.checkpoint").unlink()
    write(path, key, 30)  # someone with the key writes another history, longer
    (tmp_path / "audit.jsonl.checkpoint").write_bytes(shipped)  # while the shipped head is the honest one
    with pytest.raises(IntegrityError, match="do not have the root"):
        AuditLog(path, key)


def test_a_forged_checkpoint_file_stops_the_writer(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    write(path, key, 25)
    cp = tmp_path / "audit.jsonl.checkpoint"
    text = cp.read_bytes()
    cp.write_bytes(text.replace(b"\n\n", b"\n\n", 1)[:-10] + b"AAAAAAAAA\n")
    with pytest.raises(IntegrityError, match="checkpoint file"):
        AuditLog(path, key)
