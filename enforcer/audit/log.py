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

import asyncio
import base64
import errno
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enforcer.audit.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from enforcer.audit.entry import (
    GENESIS_PREV,
    Entry,
    make_entry,
    transition_message,
)
from enforcer.audit.files import sealed_segments, segment_path
from enforcer.audit.keys import key_id, raw_public_bytes
from enforcer.audit.records import (
    CheckpointRecord,
    Header,
    KeyTransitionRecord,
    timestamp,
)
from enforcer.audit.startup import read_checkpoint_file, scan_log
from enforcer.errors import AuditError, AuditUnavailable, IntegrityError

log = logging.getLogger(__name__)

_MAX_BATCH = 256
RECOVERY_INTERVAL_S = 1.0
_STOP = object()

# Who waits for an entry: a concurrent future (blocking callers), an asyncio
# future with its loop (the service), or nobody (the writer's own records).
_Waiter = Future | tuple[asyncio.AbstractEventLoop, asyncio.Future] | None


@dataclass(frozen=True)
class Appended:
    """Where a record landed: cite it (proofs, the console) by seq or leaf."""

    seq: int
    leaf_hash: str
    event_id: str


def _deliver(results: list[tuple[_Waiter, Entry | BaseException]]) -> None:
    """Resolve waiters from the writer thread: concurrent futures directly,
    asyncio futures with one call_soon_threadsafe per loop."""
    per_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Entry | BaseException]]] = {}
    for waiter, outcome in results:
        if waiter is None:
            continue
        if isinstance(waiter, Future):
            if waiter.set_running_or_notify_cancel():
                if isinstance(outcome, BaseException):
                    waiter.set_exception(outcome)
                else:
                    waiter.set_result(outcome)
            continue
        loop, fut = waiter
        per_loop.setdefault(loop, []).append((fut, outcome))
    for loop, items in per_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:
            pass  # the loop is closed: nobody is left to tell


def _settle(items: list[tuple[asyncio.Future, Entry | BaseException]]) -> None:
    """On the event loop: a waiter cancelled meanwhile is simply skipped."""
    for fut, outcome in items:
        if fut.done():
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(Appended(outcome.seq, outcome.leaf_hash, str(outcome.record.get("event_id", ""))))


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
            raise AuditUnavailable(f"{path}: another process holds the audit log; one writer per file") from None
        fd = self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        _cut_torn_tail(fd, path)
        # One pass over the whole log (segments too) checks its history
        # (enforcer.audit.startup) and gives every bit of state.
        keys = [signing_key.public_key(), *([previous_key.public_key()] if previous_key else [])]
        trusted = read_checkpoint_file(self.checkpoint_path, keys)
        files = [*sealed_segments(path), path]
        if trusted is not None and origin and origin != trusted.origin and not any(f.stat().st_size for f in files):
            # The operator named a new log: the old one's tree head is kept, never overwritten.
            retired = self.checkpoint_path.with_name(f"{self.checkpoint_path.name}.{int(time.time())}.retired")
            os.rename(self.checkpoint_path, retired)
            log.warning("%s: new log origin %r; the checkpoint of %r is kept as %s",
                        path, origin, trusted.origin, retired)
            trusted = None
        try:
            scan = scan_log(files, keys, trusted, self.checkpoint_path)
        except IntegrityError:
            os.close(self._fd)
            os.close(self._lock_fd)
            raise
        if scan.unverifiable:
            log.warning("%s: %d entries at the end of the log (or its last checkpoint) are signed by a key this "
                        "service does not hold and were not signature-checked at start-up", path, scan.unverifiable)
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
        # Told from the writer thread when the log is poisoned, and when it
        # recovers from a full disk (health, metrics).
        self.on_failure: Callable[[AuditError], None] | None = None
        self.on_recover: Callable[[], None] | None = None
        self._recoverable = False
        self._recover_at = 0.0
        self._closed = False
        self._submit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        self._hand_over_key(signing_key, previous_key)

    @property
    def size(self) -> int:
        return self._next_seq

    @property
    def failure(self) -> AuditError | None:
        """Why the log refuses appends (None while it is healthy)."""
        return self._failure

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
        raw = raw_public_bytes(key.public_key())
        self.append(KeyTransitionRecord(
            timestamp=timestamp(time.time()),
            old_kid=last_kid,
            new_kid=self.kid,
            new_public_key=base64.b64encode(raw).decode(),
            old_signature=base64.b64encode(previous.sign(transition_message(last_kid, self.kid, raw))).decode(),
        ))
        log.warning("audit signing key rotated: %s -> %s (transition entry written)", last_kid, self.kid)

    def _enqueue(self, record: Header | dict[str, Any], waiter: _Waiter) -> None:
        doc = record.to_dict() if isinstance(record, Header) else record
        with self._submit_lock:
            if self._failure is not None:
                error: AuditError | None = self._failure
            elif self._closed:
                error = AuditUnavailable(f"{self.path}: the audit log is closed")
            else:
                error = None
                self._queue.put((doc, waiter))
        if error is not None:
            _deliver([(waiter, error)])

    def submit(self, record: Header | dict[str, Any]) -> Future[Entry]:
        """Queue a record; the future resolves once its entry is fsynced. The
        service writes typed records (enforcer.audit.records); a plain dict is
        the log's own substrate, for tools and the writer's tests."""
        fut: Future[Entry] = Future()
        self._enqueue(record, fut)
        return fut

    def append(self, record: Header | dict[str, Any]) -> Entry:
        """Blocking append, for tools and tests outside the event loop."""
        return self.submit(record).result()

    def append_async(self, record: Header | dict[str, Any]) -> asyncio.Future[Appended]:
        """Queue a record from the event loop; the returned future resolves
        with where the entry landed once it is fsynced.

        The writer resolves every waiter of one loop in a batch with a single
        call_soon_threadsafe, so a group commit wakes the loop once, not once
        per record. A waiter cancelled meanwhile (the caller's RPC was
        cancelled) is skipped: a caller's cancellation never reaches the
        writer. The entry is written whether or not anyone still waits."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Appended] = loop.create_future()
        self._enqueue(record, (loop, fut))
        return fut

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
        """The writer thread. It never dies silently: anything unexpected
        poisons the log loudly, and every waiter, queued or later, is told."""
        try:
            self._loop_forever()
        except BaseException as e:  # noqa: BLE001 - the writer must not vanish
            self._poison(AuditUnavailable(f"{self.path}: the audit writer failed, refusing further appends: "
                                          f"{type(e).__name__}: {e}"))
            log.critical("audit writer crashed", exc_info=True)
            while True:  # fail everything still queued
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return
                if item is not _STOP:
                    _deliver([(item[1], self._failure)])

    def _poison(self, error: AuditError) -> None:
        with self._submit_lock:
            if self._failure is None:
                self._failure = error
        if self.on_failure is not None:
            try:
                self.on_failure(self._failure)
            except Exception:  # noqa: BLE001 - reporting must not hide the failure
                log.exception("audit failure callback failed")

    def _loop_forever(self) -> None:
        while True:
            if self._recoverable:
                self._try_recover()
            try:
                timeout = RECOVERY_INTERVAL_S if self._recoverable else self._cp_interval
                item = self._queue.get(timeout=timeout)
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

    def _write_batch(self, batch: list[tuple[dict[str, Any], _Waiter]]) -> list[Entry]:
        """Sign, chain, write and fsync a batch; resolve its waiters."""
        if self._failure is not None:
            _deliver([(w, self._failure) for _, w in batch])
            return []
        seq, prev = self._next_seq, self._prev
        leaves: list[bytes] = []
        entries: list[tuple[Entry, _Waiter]] = []
        refused: list[tuple[_Waiter, BaseException]] = []
        chunks: list[bytes] = []
        for record, waiter in batch:
            try:
                entry = make_entry(seq, prev, record, self._sign, self.kid)
            except AuditError as e:
                refused.append((waiter, e))  # this record only; the chain is untouched
                continue
            entries.append((entry, waiter))
            chunks.append(entry.to_line())
            leaves.append(bytes.fromhex(entry.leaf_hash))
            seq, prev = seq + 1, entry.leaf_hash
        start = -1
        try:
            data = b"".join(chunks)
            start = os.fstat(self._fd).st_size
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError as e:
            self._fail_write(e, start)
            _deliver(refused + [(w, self._failure) for _, w in entries])
            return []
        self._next_seq, self._prev = seq, prev
        for leaf in leaves:
            self._tree.append(leaf)
        _deliver(refused + [(w, e) for e, w in entries])
        return [e for e, _ in entries]

    def _fail_write(self, error: OSError, start: int) -> None:
        """A write or fsync failed: cut whatever part of the batch reached the
        file (no torn line stays behind, and nothing of the batch was
        acknowledged), then refuse appends. A full disk (ENOSPC, EDQUOT) is
        retried by the writer every RECOVERY_INTERVAL_S; anything else, or
        a cut that fails, needs a restart, and says so."""
        cut = False
        if start >= 0:
            try:
                os.ftruncate(self._fd, start)
                os.fsync(self._fd)
                cut = True
            except OSError as e:
                log.critical("%s: cannot cut the failed batch back to offset %d: %s", self.path, start, e)
        self._recoverable = cut and error.errno in (errno.ENOSPC, errno.EDQUOT)
        self._recover_at = time.monotonic() + RECOVERY_INTERVAL_S  # not at once: give the disk a moment
        then = ("retrying once space is freed" if self._recoverable
                else "restart the service once the cause is fixed (run `aecl verify` first)")
        self._poison(AuditUnavailable(f"{self.path}: audit write failed, refusing further appends ({then}): {error}"))
        log.critical("%s", self._failure)

    def _try_recover(self) -> None:
        """After a full disk: append a checkpoint as the probe. If it is
        written, appends resume; if not, the log stays refusing."""
        if not self._recoverable or self._failure is None or time.monotonic() < self._recover_at:
            return
        with self._submit_lock:
            failure, self._failure = self._failure, None
        self._checkpoint_now(force=True)
        if self._failure is None:
            self._recoverable = False
            log.warning("%s: the audit log is writable again after: %s; appends resume", self.path, failure)
            if self.on_recover is not None:
                try:
                    self.on_recover()
                except Exception:  # noqa: BLE001 - reporting must not stop the writer
                    log.exception("audit recovery callback failed")

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
        sealed = segment_path(self.path, self._segment_first)
        try:
            os.fsync(self._fd)
            os.chmod(self.path, 0o440)
            os.rename(self.path, sealed)
            _fsync_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as e:
            self._poison(AuditUnavailable(f"{self.path}: segment rotation failed, refusing further appends: {e}"))
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

    def _checkpoint_now(self, *, force: bool = False) -> None:
        """Sign the current tree head, append it as an entry, ship it to the
        file (also with nothing new since the last one, when forced)."""
        if self._failure is not None or (self._tree.size == self._last_cp_size and not force):
            return
        size, root = self._tree.size, self._tree.root()
        note = sign_checkpoint(Checkpoint(self.origin, size, root), [self._note_signer]).decode()
        record = CheckpointRecord(
            timestamp=timestamp(time.time()), tree_size=size, root=base64.b64encode(root).decode(), note=note,
        )
        if not self._write_batch([(record.to_dict(), None)]):
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
        raise IntegrityError(f"{path}: last line longer than 1 MiB; refusing to guess where it starts")
    new_size = size - tail_len + cut + 1 if cut >= 0 else 0
    log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write", path, size - new_size)
    os.ftruncate(fd, new_size)
    os.fsync(fd)
