"""The audit log writer: sign, chain, append, fsync, with group commit.

One writer thread owns the file. Callers submit records and get a future that
resolves only after the entry is on disk (fsync), so an RPC never returns
before its decision is durable. Records submitted while a write is in flight
are batched into the next write and share one fsync.

If a write or fsync ever fails, the log is poisoned: that batch and every
later append raise AuditError, so the service fails closed instead of acting
without a record.

The writer keeps the RFC 6962 Merkle tree of the entries (a compact range:
O(log n) per append) and writes a signed checkpoint (C2SP tlog-checkpoint in
a signed note) every `checkpoint_every` entries, every `checkpoint_interval_s`
seconds when entries arrived, and on close: as an entry of the log, and to a
separate file meant to be shipped elsewhere (a witness, another host), which
is what lets an auditor detect a truncated or rolled-back log.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enforcer.audit.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from enforcer.audit.entry import GENESIS_PREV, TAIL, Entry, make_entry, transition_message
from enforcer.audit.keys import key_id
from enforcer.audit.merkle import CompactTree
from enforcer.errors import AuditError

log = logging.getLogger(__name__)

_MAX_BATCH = 256
_STOP = object()


def default_origin(kid: str) -> str:
    return f"aecl/audit/{kid}"


class AuditLog:
    def __init__(
        self,
        path: Path,
        signing_key: Ed25519PrivateKey,
        *,
        origin: str | None = None,
        checkpoint_path: Path | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 10.0,
        max_segment_bytes: int | None = None,
        previous_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.path = path
        self._sign = signing_key.sign
        self.kid = key_id(signing_key.public_key())
        self.checkpoint_path = checkpoint_path or path.with_name(path.name + ".checkpoint")
        self._cp_every = checkpoint_every
        self._cp_interval = checkpoint_interval_s
        self._max_segment = max_segment_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        # One writer per log, across its segments: the lock outlives rotations.
        self._lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise AuditError(f"{path}: another process holds the audit log; one writer per file") from None
        fd = self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        _cut_torn_tail(fd, path)
        # One pass over the whole log (segments too) gives every bit of state.
        scan = _scan([*sealed_segments(path), path])
        self._tree, self._last_cp_size = scan.tree, scan.last_checkpoint_size
        self._next_seq = scan.tree.size
        self._prev = scan.last_leaf or GENESIS_PREV
        self._segment_first = self._next_seq - scan.active_lines
        self._last_kid = scan.last_kid
        # A log keeps its name across key rotations: the first key names it.
        self.origin = origin or scan.origin or default_origin(self.kid)
        self._note_signer = NoteSigner(self.origin, signing_key)
        self._last_cp_time = time.monotonic()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._failure: AuditError | None = None
        self._closed = False
        self._submit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        self._hand_over_key(signing_key, previous_key)

    @property
    def size(self) -> int:
        return self._next_seq

    def _hand_over_key(self, key: Ed25519PrivateKey, previous: Ed25519PrivateKey | None) -> None:
        """After a key rotation, the first entry is a transition signed by both
        keys: the old one signs the statement inside it, the new one the entry.
        A verifier that trusts the old key then trusts the new one from there."""
        last_kid = self._last_kid
        if last_kid is None or last_kid == self.kid:
            return
        if previous is None or key_id(previous.public_key()) != last_kid:
            log.warning("%s: the log was signed by key %s and continues with key %s without a transition "
                        "entry (set audit.previous_signing_key); auditors need both public keys",
                        self.path, last_kid, self.kid)
            return
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.append({
            "event_id": "evt_" + uuid.uuid4().hex,
            "kind": "key_transition",
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "old_kid": last_kid,
            "new_kid": self.kid,
            "new_public_key": base64.b64encode(raw).decode(),
            "old_signature": base64.b64encode(previous.sign(transition_message(last_kid, self.kid, raw))).decode(),
        })
        log.warning("audit signing key rotated: %s -> %s (transition entry written)", last_kid, self.kid)

    def submit(self, record: dict[str, Any]) -> Future[Entry]:
        fut: Future[Entry] = Future()
        with self._submit_lock:
            if self._failure is not None:
                fut.set_exception(self._failure)
            elif self._closed:
                fut.set_exception(AuditError(f"{self.path}: the audit log is closed"))
            else:
                self._queue.put((record, fut))
        return fut

    def append(self, record: dict[str, Any]) -> Entry:
        """Blocking append, for tools and tests outside the event loop."""
        return self.submit(record).result()

    def close(self) -> None:
        with self._submit_lock:
            # Late submitters fail at once instead of waiting on a stopped writer;
            # everything submitted before is written before the writer stops.
            already, self._closed = self._closed, True
            if not already:
                self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._cp_interval)
            except queue.Empty:
                self._maybe_checkpoint(force_time=True)
                continue
            if item is _STOP:
                self._checkpoint_now()
                return
            batch = [item]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._write_batch(batch)
            self._maybe_checkpoint()
            self._maybe_rotate()
            if stop:
                self._checkpoint_now()
                return

    def _write_batch(self, batch: list[tuple[dict[str, Any], Future[Entry]]]) -> None:
        if self._failure is not None:
            for _, fut in batch:
                fut.set_exception(self._failure)
            return
        seq, prev = self._next_seq, self._prev
        leaves: list[bytes] = []
        entries: list[tuple[Entry, Future[Entry]]] = []
        chunks: list[bytes] = []
        for record, fut in batch:
            try:
                entry = make_entry(seq, prev, record, self._sign, self.kid)
            except AuditError as e:
                fut.set_exception(e)  # this record only; the chain is untouched
                continue
            entries.append((entry, fut))
            chunks.append(entry.to_line())
            leaves.append(bytes.fromhex(entry.leaf_hash))
            seq, prev = seq + 1, entry.leaf_hash
        try:
            data = b"".join(chunks)
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError as e:
            self._failure = AuditError(f"{self.path}: audit write failed, refusing further appends: {e}")
            log.critical("%s", self._failure)
            for _, fut in entries:
                fut.set_exception(self._failure)
            return
        self._next_seq, self._prev = seq, prev
        for leaf in leaves:
            self._tree.append(leaf)
        for entry, fut in entries:
            fut.set_result(entry)

    # -- segments and checkpoints (writer thread only) ------------------------

    def _maybe_rotate(self) -> None:
        """Seal the active file once it reaches max_segment_bytes. Each sealed
        segment ends with a checkpoint, and the next one continues its seq,
        chain and Merkle tree: segments are one log cut into files."""
        if self._max_segment is None or self._failure is not None:
            return
        if os.fstat(self._fd).st_size < self._max_segment:
            return
        self._checkpoint_now()
        sealed = self.path.with_name(f"{self.path.name}.seg-{self._segment_first:012d}")
        try:
            os.fsync(self._fd)
            os.chmod(self.path, 0o440)
            os.rename(self.path, sealed)
            _fsync_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as e:
            self._failure = AuditError(f"{self.path}: segment rotation failed, refusing further appends: {e}")
            log.critical("%s", self._failure)
            return
        os.close(self._fd)
        self._fd = fd
        self._segment_first = self._next_seq
        log.info("audit log segment sealed as %s", sealed)

    def _maybe_checkpoint(self, force_time: bool = False) -> None:
        new = self._tree.size - self._last_cp_size
        due_time = time.monotonic() - self._last_cp_time >= self._cp_interval
        if new > 0 and (new >= self._cp_every or due_time or force_time):
            self._checkpoint_now()

    def _checkpoint_now(self) -> None:
        """Sign the current tree head, append it as an entry, ship it to the file."""
        if self._failure is not None or self._tree.size == self._last_cp_size:
            return
        size, root = self._tree.size, self._tree.root()
        note = sign_checkpoint(Checkpoint(self.origin, size, root), [self._note_signer]).decode()
        record = {
            "event_id": "evt_" + uuid.uuid4().hex,
            "kind": "checkpoint",
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "tree_size": size,
            "root": base64.b64encode(root).decode(),
            "note": note,
        }
        done: Future[Entry] = Future()
        self._write_batch([(record, done)])
        if done.exception() is not None:
            return  # the log is poisoned; the failure is already logged
        self._last_cp_size, self._last_cp_time = self._tree.size, time.monotonic()
        try:
            _replace_file(self.checkpoint_path, note.encode())
        except OSError as e:
            # The checkpoint is in the log; only its shipped copy is stale.
            log.error("%s: cannot write the checkpoint file: %s", self.checkpoint_path, e)


def _replace_file(path: Path, data: bytes) -> None:
    """Write-then-rename, fsynced, so a reader never sees half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def sealed_segments(path: Path) -> list[Path]:
    """The sealed segments of a log, oldest first (their names sort by first seq)."""
    return sorted(path.parent.glob(path.name + ".seg-" + "[0-9]" * 12))


@dataclass
class _Scan:
    tree: CompactTree
    last_checkpoint_size: int  # the tree size the last checkpoint entry covers
    origin: str | None  # of the last checkpoint
    last_leaf: str | None
    last_kid: str | None
    active_lines: int  # entries in the last file, the active segment


def _scan(files: list[Path]) -> _Scan:
    """Read every entry's fixed-shape tail once; the last line is also parsed
    to check that its seq matches the number of entries before it."""
    tree = CompactTree()
    last_cp, origin, last_line, m, lines = 0, None, None, None, 0
    for path in files:
        lines = 0
        with path.open("rb") as f:
            for line in f:
                m = TAIL.search(line.rstrip(b"\n"))
                if m is None:
                    raise AuditError(f"{path}: entry {tree.size} is not an audit entry; run `aecl verify`")
                if b'"kind":"checkpoint"' in line:
                    record = json.loads(line)["record"]
                    if record.get("kind") == "checkpoint":
                        last_cp = tree.size
                        origin = str(record.get("note", "")).split("\n", 1)[0] or origin
                tree.append(bytes.fromhex(m.group(1).decode()))
                last_line, lines = line, lines + 1
        if lines == 0 and path != files[-1]:
            raise AuditError(f"{path}: empty sealed segment; run `aecl verify`")
    if last_line is None:
        return _Scan(tree, 0, None, None, None, 0)
    try:
        seq = int(json.loads(last_line)["seq"])
    except (ValueError, KeyError, TypeError) as e:
        raise AuditError(f"{files[-1]}: last entry is unreadable ({e}); run `aecl verify` before appending") from e
    if seq != tree.size - 1:
        raise AuditError(f"{files[-1]}: {tree.size} entries but the last is numbered {seq}; run `aecl verify`")
    covered = tree.size if last_cp == tree.size - 1 else last_cp
    return _Scan(tree, covered, origin, m.group(1).decode(), m.group(2).decode(), lines)


def _cut_torn_tail(fd: int, path: Path) -> None:
    """Cut a torn final line left by a crash.

    A torn line was never fsynced as a whole, so it was never acknowledged to
    any caller: cutting it loses nothing that was promised.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return
    tail_len = min(size, 1 << 20)
    tail = os.pread(fd, tail_len, size - tail_len)
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    if cut < 0 and tail_len < size:
        raise AuditError(f"{path}: last line longer than 1 MiB; refusing to guess where it starts")
    new_size = size - tail_len + cut + 1 if cut >= 0 else 0
    log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write", path, size - new_size)
    os.ftruncate(fd, new_size)
    os.fsync(fd)
