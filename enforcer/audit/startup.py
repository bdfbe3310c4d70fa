"""What the writer checks of the log's history before it appends to it.

A writer that trusted the file as it found it would extend a log someone
edited, cut short or deleted, and then sign checkpoints over it. So at
start-up, in one pass over every segment:

  1. every line has the entry shape, its seq is its position, and its `prev`
     is the previous line's leaf hash (the chain, over the whole log: both
     are read from fixed places in the line, so this is cheap);
  2. at every checkpoint entry, the Merkle root of the leaves before it is
     the root it records; the last checkpoint's signed note verifies with a
     key the writer holds (or by none it holds, after a rotation without a
     transition entry: then it is logged as unverifiable);
  3. every entry of the active segment (the file appended to) hashes to its
     leaf hash: a byte changed anywhere in it is caught (SHA-256 only, about
     a second for a full 256 MiB segment); sealed segments end in their own
     checkpoint and are left to `aecl verify`;
  4. every entry after the last checkpoint (the part no signed checkpoint
     covers yet) also has its signature verified (where it was signed by a
     key the writer holds; entries by another key, after a rotation without
     a transition, are logged as unverifiable);
  5. the shipped checkpoint file (the writer's own latest tree head) is
     consistent with the log: the log has at least its size, and the root
     of its first entries is its root. A shorter log means acknowledged
     entries are gone (a truncated, rolled-back or deleted log).

Signatures before the last checkpoint are not re-checked here (the signed
checkpoint covers them; `aecl verify` checks every byte). Any failure is an
IntegrityError naming the file and entry: the service refuses to start.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enforcer.audit.checkpoint import (Checkpoint, CheckpointError, NoteVerifier, UnverifiedNoteError,
                                       open_checkpoint, parse_checkpoint)
from enforcer.audit.entry import GENESIS_PREV, TAIL, leaf_hash, signature_message
from enforcer.audit.keys import key_id
from enforcer.audit.merkle import CompactTree
from enforcer.errors import IntegrityError

log = logging.getLogger(__name__)
_PREV = re.compile(rb'\A\{"prev":"([0-9a-f]{64})",')
_SEQ = re.compile(rb',"seq":(\d+)\Z')


@dataclass
class Scan:
    tree: CompactTree
    last_checkpoint_size: int  # the tree size the last checkpoint entry covers
    origin: str | None  # of the last checkpoint
    last_leaf: str | None
    last_kid: str | None
    active_lines: int  # entries in the last file, the active segment
    unverifiable: int = 0  # tail entries signed by a key the writer does not hold


def read_checkpoint_file(path: Path, keys: list[Ed25519PublicKey]) -> Checkpoint | None:
    """The writer's shipped checkpoint, verified with its own keys; None when
    there is none yet. A file that is there but does not verify is refused."""
    try:
        note = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IntegrityError(f"{path}: cannot read the checkpoint file: {e.strerror}") from e
    origin = note.split(b"\n", 1)[0].decode("utf-8", "replace")
    try:
        cp, _ = open_checkpoint(note, [NoteVerifier(origin, k) for k in keys])
    except UnverifiedNoteError:
        # Signed by a key this writer does not hold (a rotation without
        # audit.previous_signing_key): its tree head is still held to.
        log.warning("%s: the checkpoint file is signed by a key this service does not hold; checking the log "
                    "against it unverified", path)
        try:
            return parse_checkpoint(note[: note.rfind(b"\n\n") + 1])
        except CheckpointError as e:
            raise IntegrityError(f"{path}: the checkpoint file is not a checkpoint: {e}") from None
    except CheckpointError as e:
        raise IntegrityError(f"{path}: the checkpoint file does not verify with the service's keys: {e}") from None
    return cp


def scan_log(files: list[Path], keys: list[Ed25519PublicKey], trusted: Checkpoint | None,
             checkpoint_path: Path) -> Scan:
    by_kid = {key_id(k): k for k in keys}
    tree = CompactTree()
    prev = GENESIS_PREV
    last_cp, origin, last_kid, lines, cp_note = 0, None, None, 0, ""
    tail: list[tuple[Path, int, bytes, str, str, str]] = []  # entries since the last checkpoint
    trusted_checked = trusted is None or trusted.size == 0
    for path in files:
        lines = 0
        with path.open("rb") as f:
            for raw in f:
                line = raw.rstrip(b"\n")
                n = tree.size
                m = TAIL.search(line)
                p = _PREV.match(line)
                if m is None or p is None:
                    raise IntegrityError(f"{path}: entry {n} is not an audit entry; run `aecl verify`")
                body = line[: m.start()] + b"}"
                s = _SEQ.search(body[:-1])
                if s is None or int(s.group(1)) != n:
                    raise IntegrityError(f"{path}: entry {n} is numbered {s.group(1).decode() if s else '?'}; "
                                         "entries were removed, inserted or reordered; run `aecl verify`")
                if p.group(1).decode() != prev:
                    raise IntegrityError(f"{path}: entry {n} does not chain to the entry before it; "
                                         "run `aecl verify`")
                leaf, kid, sig = m.group(1).decode(), m.group(2).decode(), m.group(3).decode()
                if path == files[-1] and leaf_hash(body).hex() != leaf:
                    raise IntegrityError(f"{path}: entry {n} was changed after it was written (its hash does "
                                         "not match); run `aecl verify`")
                if b'"kind":"checkpoint"' in line:
                    record = json.loads(line)["record"]
                    if record.get("kind") == "checkpoint":
                        _check_checkpoint_entry(path, n, record, tree)
                        last_cp, tail = n, []
                        origin = str(record.get("note", "")).split("\n", 1)[0] or origin
                        cp_note = record.get("note", "")
                tail.append((path, n, body, leaf, kid, sig))
                tree.append(bytes.fromhex(leaf))
                prev, last_kid, lines = leaf, kid, lines + 1
                if not trusted_checked and tree.size == trusted.size:
                    _check_trusted(checkpoint_path, trusted, tree)
                    trusted_checked = True
        if lines == 0 and path != files[-1]:
            raise IntegrityError(f"{path}: empty sealed segment; run `aecl verify`")
    if not trusted_checked:
        raise IntegrityError(
            f"{files[-1]}: the log has {tree.size} entries but its checkpoint file {checkpoint_path} covers "
            f"{trusted.size}: acknowledged entries are gone (the log was truncated, rolled back or deleted). "
            "Restore the log; to start a new log instead, set a new audit.origin (the old checkpoint file is "
            "then kept beside it)")
    unverifiable = _check_last_note(files[-1], last_cp, cp_note, by_kid) if cp_note else 0
    unverifiable += _verify_tail(tail, by_kid)
    if tree.size == 0:
        return Scan(tree, 0, None, None, None, 0)
    covered = tree.size if last_cp == tree.size - 1 else last_cp
    return Scan(tree, covered, origin, prev, last_kid, lines, unverifiable)


def _check_checkpoint_entry(path: Path, n: int, record: dict, tree: CompactTree) -> None:
    if record.get("tree_size") != tree.size or record.get("root") != base64.b64encode(tree.root()).decode():
        raise IntegrityError(f"{path}: checkpoint entry {n} does not match the entries before it "
                             "(an entry it covers was changed); run `aecl verify`")


def _check_last_note(path: Path, n: int, note: str, by_kid: dict[str, Ed25519PublicKey]) -> int:
    """1 when the note is signed only by keys the writer does not hold (a
    rotation without a transition entry): unverifiable here, not forged."""
    origin = note.split("\n", 1)[0]
    try:
        open_checkpoint(note.encode(), [NoteVerifier(origin, k) for k in by_kid.values()])
    except UnverifiedNoteError:
        return 1
    except CheckpointError as e:
        raise IntegrityError(f"{path}: the last checkpoint (entry {n}) does not verify with the service's "
                             f"keys: {e}") from None
    return 0


def _check_trusted(checkpoint_path: Path, trusted: Checkpoint, tree: CompactTree) -> None:
    if tree.root() != trusted.root:
        raise IntegrityError(f"{checkpoint_path}: the log's first {trusted.size} entries do not have the root "
                             "of its checkpoint file: the log was changed or replaced; run `aecl verify`")


def _verify_tail(tail: list[tuple[Path, int, bytes, str, str, str]], by_kid: dict[str, Ed25519PublicKey]) -> int:
    unverifiable = 0
    for path, n, body, leaf, kid, sig in tail:
        if leaf_hash(body).hex() != leaf:  # the active segment's were checked in the scan
            raise IntegrityError(f"{path}: entry {n} was changed after it was written (its hash does not "
                                 "match); run `aecl verify`")
        key = by_kid.get(kid)
        if key is None:
            unverifiable += 1
            continue
        try:
            key.verify(base64.b64decode(sig), signature_message(bytes.fromhex(leaf)))
        except (InvalidSignature, ValueError):
            raise IntegrityError(f"{path}: entry {n}'s signature does not verify; run `aecl verify`") from None
    return unverifiable
