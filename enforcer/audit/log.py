"""The audit log writer: sign, chain, append, fsync, with group commit.

One writer thread owns the file. Callers submit records and get a future that
resolves only after the entry is on disk (fsync), so an RPC never returns
before its decision is durable. Records submitted while a write is in flight
are batched into the next write and share one fsync.

If a write or fsync ever fails, the log is poisoned: that batch and every
later append raise AuditError, so the service fails closed instead of acting
without a record.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enforcer.audit.entry import GENESIS_PREV, Entry, make_entry
from enforcer.audit.keys import key_id
from enforcer.errors import AuditError

log = logging.getLogger(__name__)

_MAX_BATCH = 256
_STOP = object()


class AuditLog:
    def __init__(self, path: Path, signing_key: Ed25519PrivateKey) -> None:
        self.path = path
        self._sign = signing_key.sign
        self.kid = key_id(signing_key.public_key())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditError(f"{path}: another process holds the audit log; one writer per file") from None
        self._fd = fd
        self._next_seq, self._prev = _recover_tail(fd, path)
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
            item = self._queue.get()
            if item is _STOP:
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
            if stop:
                return

    def _write_batch(self, batch: list[tuple[dict[str, Any], Future[Entry]]]) -> None:
        if self._failure is not None:
            for _, fut in batch:
                fut.set_exception(self._failure)
            return
        seq, prev = self._next_seq, self._prev
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
        for entry, fut in entries:
            fut.set_result(entry)


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
