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
from datetime import datetime, timezone
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enforcer.audit.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from enforcer.audit.entry import GENESIS_PREV, TAIL, Entry, make_entry
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
    ) -> None:
        self.path = path
        self._sign = signing_key.sign
        self.kid = key_id(signing_key.public_key())
        self.origin = origin or default_origin(self.kid)
        self._note_signer = NoteSigner(self.origin, signing_key)
        self.checkpoint_path = checkpoint_path or path.with_name(path.name + ".checkpoint")
        self._cp_every = checkpoint_every
        self._cp_interval = checkpoint_interval_s
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditError(f"{path}: another process holds the audit log; one writer per file") from None
        self._fd = fd
        self._next_seq, self._prev = _recover_tail(fd, path)
        self._tree, self._last_cp_size = _rebuild_tree(fd, path, self._next_seq)
        self._last_cp_time = time.monotonic()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._failure: AuditError | None = None
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    @property
    def size(self) -> int:
        return self._next_seq

    def submit(self, record: dict[str, Any]) -> Future[Entry]:
        fut: Future[Entry] = Future()
        if self._failure is not None:
            fut.set_exception(self._failure)
        else:
            self._queue.put((record, fut))
        return fut

    def append(self, record: dict[str, Any]) -> Entry:
        """Blocking append, for tools and tests outside the event loop."""
        return self.submit(record).result()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)  # also releases the flock
            self._fd = -1

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

    # -- checkpoints (writer thread only) ------------------------------------

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
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _rebuild_tree(fd: int, path: Path, expected: int) -> tuple[CompactTree, int]:
    """The Merkle tree of the existing entries, and the size the last
    checkpoint entry covered. Reads only each line's fixed-shape tail."""
    tree = CompactTree()
    last_cp = 0
    with open(os.dup(fd), "rb", closefd=True) as f:
        f.seek(0)
        for line in f:
            m = TAIL.search(line.rstrip(b"\n"))
            if m is None:
                raise AuditError(f"{path}: line {tree.size + 1} is not an audit entry; run `aecl verify`")
            if b'"kind":"checkpoint"' in line and json.loads(line)["record"].get("kind") == "checkpoint":
                last_cp = tree.size
            tree.append(bytes.fromhex(m.group(1).decode()))
    if tree.size != expected:
        raise AuditError(f"{path}: {tree.size} entries but the last is numbered {expected - 1}; run `aecl verify`")
    return tree, (tree.size if last_cp == tree.size - 1 and tree.size else last_cp)


def _recover_tail(fd: int, path: Path) -> tuple[int, str]:
    """Find the last complete entry; cut a torn final line left by a crash.

    A torn line was never fsynced as a whole, so it was never acknowledged to
    any caller: cutting it loses nothing that was promised.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, GENESIS_PREV
    tail_len = min(size, 1 << 20)
    tail = os.pread(fd, tail_len, size - tail_len)
    if not tail.endswith(b"\n"):
        cut = tail.rfind(b"\n")
        new_size = size - tail_len + cut + 1 if cut >= 0 else 0
        if cut < 0 and tail_len < size:
            raise AuditError(f"{path}: last line longer than 1 MiB; refusing to guess where it starts")
        log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write", path, size - new_size)
        os.ftruncate(fd, new_size)
        os.fsync(fd)
        size = new_size
        if size == 0:
            return 0, GENESIS_PREV
        tail = tail[: cut + 1]
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    try:
        last = json.loads(lines[-1])
        return int(last["seq"]) + 1, str(last["leaf_hash"])
    except (ValueError, KeyError, TypeError) as e:
        raise AuditError(f"{path}: last entry is unreadable ({e}); run `aecl verify` before appending") from e
