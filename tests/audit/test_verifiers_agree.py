"""`aecl verify` and the standalone scripts/verify (PyNaCl only, no code shared)
give the same verdict, exit code and line on the same logs: segmented ones,
tampered or not, empty or missing ones, and against edited (forged)
checkpoints, whose signature both check before comparing them with the log."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from enforcer.audit.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from enforcer.audit.files import sealed_segments
from enforcer.audit.keys import generate_keypair, load_signing_key
from tests.audit.stories import write_story
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "logs"


def ours(log: Path, pubs: list[Path], checkpoint: Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "enforcer", "verify", "--log", str(log)]
    for p in pubs:
        args += ["--pubkey", str(p)]
    if checkpoint is not None:
        args += ["--checkpoint", str(checkpoint)]
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120)


def theirs(log: Path, pubs: list[Path], checkpoint: Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, str(REPO / "scripts" / "verify"), "--log", str(log)]
    for p in pubs:
        args += ["--pubkey", str(p)]
    if checkpoint is not None:
        args += ["--checkpoint", str(checkpoint)]
    return subprocess.run(args, capture_output=True, text=True, cwd="/", timeout=120)


def both(log, pubs, checkpoint=None):
    return ours(log, pubs, checkpoint), theirs(log, pubs, checkpoint)


def assert_agree(log, pubs, checkpoint, code, words=(), absent=()):
    a, b = both(log, pubs, checkpoint)
    assert a.returncode == b.returncode == code, (a.stdout + a.stderr, b.stdout + b.stderr)
    for out in (a, b):
        text = out.stdout + out.stderr
        for w in words:
            assert w in text, (w, text)
        for w in absent:
            assert w not in text, (w, text)
    return a, b


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keypair(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, keys):
    """A log rotated into sealed segments, with its shipped checkpoint kept aside."""
    d = tmp_path_factory.mktemp("seg")
    write_story(d / "audit.jsonl", keys[0], tasks=4, max_segment_bytes=4096)
    assert len(sealed_segments(d / "audit.jsonl")) >= 4
    kept = tmp_path_factory.mktemp("kept") / "audit.jsonl.checkpoint"
    shutil.copy(d / "audit.jsonl.checkpoint", kept)
    return d, kept


def copy_log(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        f.chmod(0o640)
    return dst / "audit.jsonl"


def lines(p: Path) -> list[bytes]:
    return p.read_bytes().splitlines(keepends=True)


def entries_of(d: Path) -> int:
    return sum(len(lines(f)) for f in [*sealed_segments(d / "audit.jsonl"), d / "audit.jsonl"])


def test_the_standalone_verifier_verifies_every_segment(segmented, keys):
    d, kept = segmented
    n, segs = entries_of(d), len(sealed_segments(d / "audit.jsonl")) + 1
    a, b = assert_agree(d / "audit.jsonl", [keys[1]], kept, 0, words=[f"{n} entries in {segs} segments"])
    assert "0 entries" not in a.stdout + b.stdout


def _edit_segment(index: int, edit):
    def run(log: Path) -> str:
        seg = sealed_segments(log)[index]
        ls = lines(seg)
        edit(ls)
        seg.write_bytes(b"".join(ls))
        return seg.name
    return run


def _flip(ls):
    edited = ls[1].replace(b'"timestamp":"2', b'"timestamp":"3', 1)
    assert edited != ls[1]
    ls[1] = edited


def _delete_segment(log: Path) -> str:
    victim, after = sealed_segments(log)[1:3]
    victim.unlink()
    return after.name


def _empty_segment(log: Path) -> str:
    seg = sealed_segments(log)[1]
    seg.write_bytes(b"")
    return seg.name


def _swap_segments(log: Path) -> str:
    a, b = sealed_segments(log)[1:3]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    return a.name


def _delete_last_segment(log: Path) -> str:
    last = sealed_segments(log)[-1]
    last.unlink()
    return last.name


def _cut_the_end(log: Path) -> str:
    last = next(f for f in reversed([*sealed_segments(log), log]) if f.stat().st_size)
    last.write_bytes(b"".join(lines(last)[:-3]))
    return last.name


@pytest.mark.parametrize(("edit", "code", "words"), [
    (_edit_segment(1, _flip), 13, ["line 2: hash: in {name}"]),
    (_edit_segment(0, lambda ls: ls.__delitem__(2)), 11, ["line 3: sequence: in {name}"]),
    (_edit_segment(2, lambda ls: ls.__setitem__(slice(0, 2), [ls[1], ls[0]])), 11, ["line 1: sequence: in {name}"]),
    (_delete_segment, 11, ["line 1: sequence: in {name}"]),
    (_empty_segment, 10, ["malformed: sealed segment {name} is empty"]),
    (_swap_segments, 11, ["line 1: sequence: in {name}"]),
    (_delete_last_segment, 17, ["truncated: in audit.jsonl: the trusted checkpoint covers"]),
    (_cut_the_end, 17, ["truncated: in audit.jsonl: ", "entries were cut from its end"]),
])
def test_both_verifiers_name_the_same_failure_in_a_segmented_log(segmented, keys, tmp_path, edit, code, words):
    d, kept = segmented
    log = copy_log(d, tmp_path / "copy")
    name = edit(log)
    assert_agree(log, [keys[1]], kept, code, words=[w.format(name=name) for w in words], absent=["OK "])


def test_a_line_forged_with_another_key_after_the_segments(segmented, keys, tmp_path):
    from tests.audit.stories import task_records, write_records

    d, kept = segmented
    log = copy_log(d, tmp_path / "copy")
    (log.parent / "audit.jsonl.checkpoint").unlink()
    n_active = len(lines(log))
    other, _ = generate_keypair(tmp_path / "other")
    write_records(log, other, task_records("tsk_" + "f" * 32)[:1])  # continues the chain, signed by the wrong key
    assert_agree(log, [keys[1]], kept, 14, words=[f"line {n_active + 1}: unknown_key: in audit.jsonl"])


def test_a_log_rewritten_from_scratch_is_rolled_back_for_both(segmented, keys, tmp_path):
    d, kept = segmented
    other = tmp_path / "rewritten"
    other.mkdir()
    write_story(other / "audit.jsonl", keys[0], tasks=5, max_segment_bytes=4096, payload="rewritten")
    assert ours(other / "audit.jsonl", [keys[1]]).returncode == 0  # alone it verifies
    assert_agree(other / "audit.jsonl", [keys[1]], kept, 16, words=["rolled back or forked"])


def test_the_committed_segmented_fixture_with_one_key_and_its_transition():
    d = FIXTURES / "v1seg"
    assert_agree(d / "audit.jsonl", [d / "first.pub"], d / "audit.jsonl.checkpoint", 0,
                 words=["39 entries in 3 segments", "8 checkpoints"])
    assert_agree(d / "audit.jsonl", [d / "first.pub", d / "second.pub"], d / "audit.jsonl.checkpoint", 0,
                 words=["39 entries in 3 segments"])
    # Without the first key nothing of it is trusted.
    assert_agree(d / "audit.jsonl", [d / "second.pub"], None, 14, words=["line 1: unknown_key: in audit.jsonl.seg-"])


def test_a_tampered_committed_fixture_fails_alike(tmp_path):
    d = FIXTURES / "v1seg"
    log = copy_log(d, tmp_path / "v1seg")
    seg = log.with_name("audit.jsonl.seg-000000000017")
    ls = lines(seg)
    ls[1] = ls[1].replace(b'"outcome":"failed"', b'"outcome":"succeeded"', 1)
    seg.write_bytes(b"".join(ls))
    assert_agree(log, [d / "first.pub"], d / "audit.jsonl.checkpoint", 13,
                 words=["line 2: hash: in audit.jsonl.seg-000000000017"])


# ------------------------------------------------------------ nothing verified


def test_a_missing_log_verifies_nothing(keys, tmp_path):
    assert_agree(tmp_path / "nope.jsonl", [keys[1]], None, 18, words=["NOTHING VERIFIED", "nothing was verified"],
                 absent=["OK "])


def test_an_empty_log_verifies_nothing(keys, tmp_path):
    (tmp_path / "audit.jsonl").write_bytes(b"")
    assert_agree(tmp_path / "audit.jsonl", [keys[1]], None, 18, words=["the log is empty", "nothing was verified"],
                 absent=["OK ", "0 entries"])


def test_an_empty_log_against_a_checkpoint_is_truncated(segmented, keys, tmp_path):
    _, kept = segmented
    (tmp_path / "audit.jsonl").write_bytes(b"")
    assert_agree(tmp_path / "audit.jsonl", [keys[1]], kept, 17, words=["truncated"])


# -------------------------------------------------------- forged checkpoints


def _edit_note(note: bytes, line: int, new: str) -> bytes:
    text, sep, sigs = note.rpartition(b"\n\n")
    parts = text.split(b"\n")
    parts[line] = new.encode()
    return b"\n".join(parts) + sep + sigs


@pytest.fixture(scope="module")
def single(tmp_path_factory, keys):
    d = tmp_path_factory.mktemp("single")
    write_story(d / "audit.jsonl", keys[0], tasks=3)
    return d / "audit.jsonl", d / "audit.jsonl.checkpoint"


def _size(note: bytes) -> int:
    return int(note.split(b"\n")[1])


@pytest.mark.parametrize("forge", [
    lambda note: _edit_note(note, 1, str(_size(note) + 50)),  # claims more: would look truncated
    lambda note: _edit_note(note, 1, str(_size(note) - 5)),  # claims less: would look rolled back
    lambda note: _edit_note(note, 2, base64.b64encode(b"\x07" * 32).decode()),  # another root
    lambda note: _edit_note(note, 0, "aecl/audit/someone-else"),  # another origin
], ids=["size-up", "size-down", "root", "origin"])
def test_an_edited_checkpoint_is_forged_not_truncation_or_rollback(single, keys, tmp_path, forge):
    log, shipped = single
    forged = tmp_path / "forged.checkpoint"
    forged.write_bytes(forge(shipped.read_bytes()))
    assert_agree(log, [keys[1]], shipped, 0)
    assert_agree(log, [keys[1]], forged, 16, words=["the trusted checkpoint is forged"],
                 absent=["truncated", "rolled back", "OK "])


def test_a_checkpoint_signed_by_another_key_is_forged(single, keys, tmp_path):
    log, shipped = single
    other, _ = generate_keypair(tmp_path / "other")
    origin = shipped.read_bytes().split(b"\n", 1)[0].decode()
    note = sign_checkpoint(Checkpoint(origin, 10**6, b"\x01" * 32), [NoteSigner(origin, load_signing_key(other))])
    (tmp_path / "cp").write_bytes(note)
    assert_agree(log, [keys[1]], tmp_path / "cp", 16, words=["the trusted checkpoint is forged"],
                 absent=["truncated", "rolled back"])


def test_a_malformed_checkpoint_is_a_checkpoint_failure(single, keys, tmp_path):
    log, _ = single
    (tmp_path / "cp").write_bytes(b"not a note\n")
    assert_agree(log, [keys[1]], tmp_path / "cp", 16, words=["the trusted checkpoint is malformed"])


def test_a_forged_checkpoint_signed_by_a_handed_over_key_is_forged_too(tmp_path):
    """The fixture's checkpoint is signed by the second key, which the log
    hands over: verified once that key is known, and still before comparing."""
    d = FIXTURES / "v1seg"
    note = (d / "audit.jsonl.checkpoint").read_bytes()
    for i, size in enumerate([_size(note) + 7, _size(note) - 3]):
        forged = tmp_path / f"forged{i}"
        forged.write_bytes(_edit_note(note, 1, str(size)))
        assert_agree(d / "audit.jsonl", [d / "first.pub"], forged, 16, words=["the trusted checkpoint is forged"],
                     absent=["truncated", "rolled back"])


def test_the_verifiers_help_documents_every_exit_code():
    for r in (subprocess.run([sys.executable, "-m", "enforcer", "verify", "--help"], capture_output=True, text=True,
                             cwd=REPO, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}),
              subprocess.run([sys.executable, str(REPO / "scripts" / "verify"), "--help"], capture_output=True,
                             text=True)):
        assert r.returncode == 0
        text = " ".join(r.stdout.split())
        for code in ("10 malformed", "13 hash", "16 checkpoint", "17 truncated", "18 nothing verified"):
            assert code in text, (code, text)
        assert "forged" in text


def test_json_entries_are_what_both_read(segmented):
    """Sanity of the fixture: every line of every segment is a JSON entry."""
    d, _ = segmented
    for f in [*sealed_segments(d / "audit.jsonl"), d / "audit.jsonl"]:
        for ln in lines(f):
            assert set(json.loads(ln)) == {"seq", "prev", "record", "leaf_hash", "kid", "sig"}
