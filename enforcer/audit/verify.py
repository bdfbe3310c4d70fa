"""Offline verification of an audit log: every signature and every chain link.

Steps for each line n (1-based), in this order:
  1. parse: the line is a JSON object with exactly the entry fields, in the
     entry format (enforcer.audit.entry)
  2. sequence: seq == n - 1
  3. chain: prev == leaf_hash of line n - 1 (GENESIS_PREV for line 1)
  4. hash: leaf_hash == SHA-256(0x00 || BODY), BODY being the signed bytes
  5. key: kid names a trusted public key
  6. signature: Ed25519 over SIGNATURE_DOMAIN || leaf_hash verifies
  7. checkpoint: a checkpoint entry's signed note verifies with a trusted key,
     and its tree size and root are those of the entries before it (the
     RFC 6962 tree recomputed from the leaf hashes)
  8. trusted checkpoint (optional, from the auditor): its signature verifies
     with a trusted key BEFORE it is compared with the log (an edited one is
     forged, never taken for a truncation or a rollback; one signed by a key
     a transition in the log hands over is checked once that key is known,
     and always before the comparison); then the log holds at least its tree
     size (else: truncated) and the same root at that size (else: a
     rolled-back or forked log)
The first failure raises VerificationError naming the line and the class
(TrustedCheckpointError, line 0, for the auditor's checkpoint itself).
Consecutive checkpoints are consistent by construction: every root is
recomputed from the one verified leaf sequence, so a later head extends an
earlier one or a step above has already failed.

Steps 1, 4, 5 and 6 need nothing from other lines, so they run in worker
processes over chunks of lines (Ed25519 verification is the cost: PyNaCl, one
process per core); steps 2 and 3 run in order in the calling process.
Without a checkpoint kept outside the log (step 8), truncation of the tail
cannot be seen: a shortened log is still a valid log.
"""

from __future__ import annotations

import base64
import binascii
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from enforcer.audit.checkpoint import (Checkpoint, CheckpointError, NoteVerifier, UnverifiedNoteError, open_checkpoint,
                                       parse_checkpoint)
from enforcer.audit.entry import GENESIS_PREV, leaf_hash, signature_message, split_line, transition_message
from enforcer.audit.files import iter_log_lines, log_files, read_lines
from enforcer.audit.keys import key_id, raw_public_bytes
from enforcer.audit.merkle import CompactTree
from enforcer.audit.records import CheckpointRecord, KeyTransitionRecord, parse_record
from enforcer.errors import AuditError, AuditUnavailable, IntegrityError, RecordError, VerificationError

# One exit code per failure class, for scripts that act on the kind of failure.
EXIT_CODES = {
    "malformed": 10,
    "sequence": 11,
    "chain": 12,
    "hash": 13,
    "unknown_key": 14,
    "signature": 15,
    "checkpoint": 16,
    "truncated": 17,
}
# Not a failure class of a line: the log has no entry (or does not exist), so
# nothing was verified. Never "OK".
EXIT_NOTHING_VERIFIED = 18
# `aecl audit verify-proof`: the proof does not verify against the checkpoint.
EXIT_PROOF = 19
_FIELDS = {"seq", "prev", "record", "leaf_hash", "kid", "sig"}
_KEPT_KINDS = {"checkpoint", "key_transition"}
# Below this size a process pool costs more than it saves.
_PARALLEL_FROM_BYTES = 4 << 20


@dataclass(frozen=True)
class Checked:
    """What a worker found about one line, for the in-order steps."""

    seq: Any
    prev: Any
    leaf_hash: str
    # The first failure among the line-local steps 4-6, checked after 2-3.
    late_failure: tuple[str, str] | None
    record: CheckpointRecord | KeyTransitionRecord | None  # kept only for these kinds
    kid: str = ""
    sig: str = ""


def _raw_keys(keys: Iterable[Ed25519PublicKey]) -> dict[str, bytes]:
    return {key_id(k): raw_public_bytes(k) for k in keys}


def check_line(n: int, raw: bytes, verifiers: dict[str, VerifyKey]) -> Checked:
    """Steps 1, 4, 5, 6 for one line; raises VerificationError for step 1."""
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise VerificationError(n, "malformed", f"not JSON: {e}") from None
    if not isinstance(entry, dict) or set(entry) != _FIELDS or not isinstance(entry["record"], dict):
        raise VerificationError(n, "malformed", f"entry must have exactly the fields {sorted(_FIELDS)}")
    parts = split_line(raw)
    if parts is None:
        raise VerificationError(n, "malformed", "line is not in the entry format (signed body + hash, kid, sig)")
    body, claimed, kid, sig = parts
    late = None
    if leaf_hash(body).hex() != claimed:
        late = ("hash", "leaf_hash does not match the entry's content")
    elif kid not in verifiers:
        late = ("unknown_key", f"signed by key id {kid!r}, which is not trusted")
    else:
        try:
            verifiers[kid].verify(signature_message(bytes.fromhex(claimed)), base64.b64decode(sig, validate=True))
        except (BadSignatureError, binascii.Error, ValueError):
            late = ("signature", "Ed25519 signature does not verify")
    keep = None
    kind = entry["record"].get("kind")
    if isinstance(kind, str) and kind in _KEPT_KINDS:
        try:  # read through the record types, as every reader of the log does
            keep = parse_record(entry["record"])
        except RecordError as e:
            check = "checkpoint" if kind == "checkpoint" else "malformed"
            raise VerificationError(n, check, str(e)) from None
    return Checked(entry["seq"], entry["prev"], claimed, late, keep, kid, sig)


def _check_lines(lines: Iterable[bytes], raw_keys: dict[str, bytes]) -> list[Checked | tuple[int, str]]:
    """Line-local checks of consecutive lines; a malformed line ends the list
    as (index in this batch, message)."""
    verifiers = {kid: VerifyKey(raw) for kid, raw in raw_keys.items()}
    out: list[Checked | tuple[int, str]] = []
    for i, raw in enumerate(lines):
        try:
            out.append(check_line(i + 1, raw, verifiers))
        except VerificationError as e:
            out.append((i, e.detail))
            break  # nothing after the first failure is needed
    return out


def _check_range(job: tuple[str, int, int, dict[str, bytes]]) -> list[Checked | tuple[int, str]]:
    """A worker reads its own byte range of the file: no line crosses the pipe."""
    path, start, end, raw_keys = job
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return _check_lines(lines, raw_keys)


def _ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """Split the file into byte ranges that start and end on line boundaries."""
    size = path.stat().st_size
    cuts = [0]
    with path.open("rb") as f:
        for k in range(1, parts):
            f.seek(max(cuts[-1], size * k // parts))
            f.readline()  # to the end of the line we landed in
            pos = f.tell()
            if cuts[-1] < pos < size:
                cuts.append(pos)
    cuts.append(size)
    return list(zip(cuts, cuts[1:]))


def iter_checked_file(path: Path, keys: Iterable[Ed25519PublicKey], *, workers: int | None = None,
                      first_seq: int = 0, prev: str = GENESIS_PREV,
                      learned: dict[str, VerifyKey] | None = None) -> Iterator[Checked]:
    """Every line of a log file checked in order (all six steps); raises on the
    first failure. A segment after the first starts at first_seq and chains to prev."""
    raw_keys = _raw_keys(keys)
    workers = workers or os.cpu_count() or 1
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AuditUnavailable(f"{path}: cannot read: {e.strerror}") from e
    if workers == 1 or size < _PARALLEL_FROM_BYTES:
        yield from _in_order([_check_lines(read_lines(path), raw_keys)], first_seq, prev, learned)
        return
    jobs = [(str(path), a, b, raw_keys) for a, b in _ranges(path, workers * 8)]
    # spawn, not fork: a fork of a threaded process (the service, a test run)
    # can copy a held lock into the worker and hang it.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from _in_order(pool.imap(_check_range, jobs, chunksize=1), first_seq, prev, learned)


def _verify_learned(n: int, item: Checked, learned: dict[str, VerifyKey]) -> None:
    try:
        learned[item.kid].verify(signature_message(bytes.fromhex(item.leaf_hash)), base64.b64decode(item.sig))
    except (BadSignatureError, binascii.Error, ValueError):
        raise VerificationError(n, "signature", "Ed25519 signature does not verify") from None


def _in_order(results: Iterable[list[Checked | tuple[int, str]]], first_seq: int = 0,
              prev: str = GENESIS_PREV, learned: dict[str, VerifyKey] | None = None) -> Iterator[Checked]:
    n = 0  # line number within this file
    for batch in results:
        for item in batch:
            n += 1
            if isinstance(item, tuple):
                raise VerificationError(n, "malformed", item[1])
            expected = first_seq + n - 1
            if type(item.seq) is not int or item.seq != expected:
                raise VerificationError(n, "sequence", f"seq is {item.seq!r}, expected {expected}")
            if item.prev != prev:
                raise VerificationError(n, "chain", "prev does not match the hash of the previous entry")
            if item.late_failure is not None:
                if item.late_failure[0] != "unknown_key" or learned is None:
                    raise VerificationError(n, *item.late_failure)
                if item.kid in learned:  # signed by a key a transition entry handed over
                    _verify_learned(n, item, learned)
                elif not isinstance(item.record, KeyTransitionRecord):
                    raise VerificationError(n, *item.late_failure)
                # else: a transition signed by its new key; the caller checks it
            prev = item.leaf_hash
            yield item


# Every line of a log, across its sealed segments, oldest first.
log_lines = iter_log_lines


def verify_file(path: Path, keys: Iterable[Ed25519PublicKey], *,
                progress: Callable[[int], None] | None = None, workers: int | None = None) -> int:
    return verify_log(path, keys, progress=progress, workers=workers).entries


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    checkpoints: int
    last_checkpoint: Checkpoint | None
    trusted: Checkpoint | None
    segments: int = 1
    # The keys given plus those handed over by key transitions in the log.
    keys: tuple[Ed25519PublicKey, ...] = ()
    # The RFC 6962 root of all `entries` leaves, as verified.
    root: bytes = b""


class NothingVerified(AuditError):
    """The log has no entries, or no file of it exists: nothing was verified.
    Not a success (exit EXIT_NOTHING_VERIFIED)."""

    code = "audit_nothing_verified"


class TrustedCheckpointError(VerificationError):
    """The auditor's own checkpoint (--checkpoint) is malformed or forged. It
    names no line of the log (line 0) and belongs to the checkpoint class."""

    def __init__(self, message: str) -> None:
        IntegrityError.__init__(self, message)
        self.line = 0
        self.kind = "checkpoint"
        self.detail = message


def _forged(why: object) -> TrustedCheckpointError:
    return TrustedCheckpointError(f"the trusted checkpoint is forged: its signature does not verify with the "
                                  f"trusted keys ({why}); it was not compared with the log")


def parse_trusted_checkpoint(note: bytes) -> Checkpoint:
    """The checkpoint inside an auditor's note, signature not yet checked:
    it may be signed by a key the log hands over later (verify_log checks it
    once the log's key transitions are known, before comparing it)."""
    try:
        return parse_checkpoint(note.rpartition(b"\n\n")[0] + b"\n")
    except CheckpointError as e:
        raise TrustedCheckpointError(f"the trusted checkpoint is malformed: {e}") from None


def _open_note(note: bytes, cp: Checkpoint, keys: Iterable[Ed25519PublicKey]) -> bool:
    """True when a trusted key signed the note; False when none of `keys` did
    (it may be signed by a key not known yet); raises when forged."""
    try:
        open_checkpoint(note, [NoteVerifier(cp.origin, k) for k in keys])
    except UnverifiedNoteError:
        return False
    except CheckpointError as e:
        raise _forged(e) from None
    return True


def open_trusted_checkpoint(note: bytes, keys: Iterable[Ed25519PublicKey]) -> Checkpoint:
    """An auditor's checkpoint: verified with the log's keys under its own origin."""
    cp = parse_trusted_checkpoint(note)
    if not _open_note(note, cp, keys):
        raise _forged("no signature by a trusted key")
    return cp


class _Trusted:
    """The auditor's checkpoint while the log is read: compared with the log
    only once its signature has verified (`require`)."""

    def __init__(self, note: bytes, keys: list[Ed25519PublicKey]) -> None:
        self.note = note
        self.cp = parse_trusted_checkpoint(note)
        self.verified = _open_note(note, self.cp, keys)

    def retry(self, keys: list[Ed25519PublicKey]) -> bool:
        """After the log handed over a key: does the note verify now?"""
        if not self.verified:
            self.verified = _open_note(self.note, self.cp, keys)
        return self.verified

    def require(self, keys: list[Ed25519PublicKey]) -> Checkpoint:
        if not self.retry(keys):
            raise _forged("no signature by a trusted key, nor by a key the log hands over before it")
        return self.cp


def verify_log(path: Path, keys: Iterable[Ed25519PublicKey], *, trusted_note: bytes | None = None,
               progress: Callable[[int], None] | None = None, workers: int | None = None) -> VerifyReport:
    """The whole log: its sealed segments (path.seg-*), oldest first, then path.
    `trusted_note` is a signed checkpoint the auditor kept elsewhere: its
    signature is verified before it is compared with anything."""
    keys = list({key_id(k): k for k in keys}.values())  # a key given twice is one key
    trusted = _Trusted(trusted_note, keys) if trusted_note is not None else None
    files = log_files(path)
    state = _State()
    for i, f in enumerate(files):
        try:
            _verify_segment(f, keys, state, trusted, progress, workers)
        except TrustedCheckpointError:
            raise
        except VerificationError as e:
            if len(files) > 1:  # name the file: line numbers are per file
                raise VerificationError(e.line, e.kind, f"in {f.name}: {e.detail}") from None
            raise
        if i < len(files) - 1 and state.n_in_file == 0:
            raise VerificationError(1, "malformed", f"sealed segment {f.name} is empty")
    tree = state.tree
    all_keys = [*keys, *state.learned_pub]
    if trusted is not None:
        cp = trusted.require(all_keys)  # its signature, before it is compared with the log
        where = f"in {files[-1].name}: " if len(files) > 1 else ""
        if cp.size > tree.size:
            raise VerificationError(state.n_in_file + 1, "truncated",
                                    f"{where}the trusted checkpoint covers {_n(cp.size)}, the log has "
                                    f"{tree.size}: entries were cut from its end")
        if cp.size == tree.size and tree.root() != cp.root:
            raise VerificationError(state.n_in_file, "checkpoint", f"{where}the {_n(cp.size)} do not have the "
                                    "trusted checkpoint's root: the log was rolled back or forked")
    return VerifyReport(tree.size, state.checkpoints, state.last, trusted.cp if trusted else None, len(files),
                        tuple(all_keys), tree.root())


def _n(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


class _State:
    def __init__(self) -> None:
        self.tree = CompactTree()
        self.prev = GENESIS_PREV
        self.checkpoints = 0
        self.last: Checkpoint | None = None
        self.n_in_file = 0
        # Keys handed over by key_transition entries signed by a trusted key.
        self.learned: dict[str, VerifyKey] = {}
        self.learned_pub: list[Ed25519PublicKey] = []
        # Origins of the log's checkpoints, for a trusted checkpoint verified late.
        self.origins: set[str] = set()


def _check_origin(n: int, origin: str, trusted: Checkpoint) -> None:
    if origin != trusted.origin:
        raise VerificationError(n, "checkpoint", f"the log's origin {origin!r} is not the trusted "
                                                 f"checkpoint's {trusted.origin!r}")


def _verify_segment(path: Path, keys: list[Ed25519PublicKey], state: _State, trusted: _Trusted | None,
                    progress: Callable[[int], None] | None, workers: int | None) -> None:
    tree = state.tree
    n = 0
    checked = iter_checked_file(path, keys, workers=workers, first_seq=tree.size, prev=state.prev,
                                learned=state.learned)
    for n, item in enumerate(checked, start=1):
        kind = item.record.KIND if item.record is not None else None
        if kind == "key_transition":
            _learn_key(n, item, [*keys, *state.learned_pub], state)
            if trusted is not None and not trusted.verified and trusted.retry([*keys, *state.learned_pub]):
                for origin in sorted(state.origins):  # the comparisons it missed while unverified
                    _check_origin(n, origin, trusted.cp)
        elif kind == "checkpoint":
            last = state.last = _check_checkpoint(n, item.record, tree, [*keys, *state.learned_pub])
            state.checkpoints += 1
            state.origins.add(last.origin)
            if trusted is not None and trusted.verified:
                _check_origin(n, last.origin, trusted.cp)
        if trusted is not None and tree.size == trusted.cp.size:
            cp = trusted.require([*keys, *state.learned_pub])  # verified before it is compared
            if tree.root() != cp.root:
                raise VerificationError(n, "checkpoint", f"the first {_n(cp.size)} do not have the trusted "
                                                         "checkpoint's root: the log was rolled back or forked")
        tree.append(bytes.fromhex(item.leaf_hash))
        state.prev = item.leaf_hash
        if progress is not None and tree.size % 4096 == 0:
            progress(tree.size)
    state.n_in_file = n


def _learn_key(n: int, item: Checked, trusted: list[Ed25519PublicKey], state: _State) -> None:
    """A key_transition entry: the outgoing (trusted) key's signature over the
    hand-over, and the entry itself signed by one of the two keys."""
    r = item.record
    assert isinstance(r, KeyTransitionRecord)
    by_kid = {key_id(k): k for k in trusted}
    old = by_kid.get(r.old_kid)
    if old is None:
        raise VerificationError(n, "unknown_key", f"key transition from untrusted key {r.old_kid!r}")
    try:
        raw = base64.b64decode(r.new_public_key, validate=True)
        new = Ed25519PublicKey.from_public_bytes(raw)
        old.verify(base64.b64decode(r.old_signature, validate=True), transition_message(r.old_kid, r.new_kid, raw))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        raise VerificationError(n, "signature", "key transition not signed by the outgoing key") from None
    if key_id(new) != r.new_kid or item.kid not in (r.old_kid, r.new_kid):
        raise VerificationError(n, "signature", "key transition names a key other than the one it carries")
    state.learned[key_id(new)] = VerifyKey(raw)
    if all(key_id(k) != r.new_kid for k in trusted):  # handed over a key the auditor also gave: one key
        state.learned_pub.append(new)
    if item.kid == r.new_kid and item.late_failure is not None:
        _verify_learned(n, item, state.learned)


def _check_checkpoint(n: int, record: CheckpointRecord, tree: CompactTree,
                      keys: list[Ed25519PublicKey]) -> Checkpoint:
    note = record.note
    origin = note.split("\n", 1)[0]
    try:
        cp, _ = open_checkpoint(note.encode(), [NoteVerifier(origin, k) for k in keys])
    except CheckpointError as e:
        raise VerificationError(n, "checkpoint", f"checkpoint note: {e}") from None
    if cp.size != tree.size:
        raise VerificationError(n, "checkpoint", f"checkpoint claims {cp.size} entries, {tree.size} precede it")
    if cp.root != tree.root():
        raise VerificationError(n, "checkpoint", "checkpoint root is not the Merkle root of the entries before it")
    if record.tree_size != cp.size or record.root != base64.b64encode(cp.root).decode():
        raise VerificationError(n, "checkpoint", "checkpoint entry's tree_size/root differ from its signed note")
    return cp
