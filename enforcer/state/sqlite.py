"""SQLite state store: every write on one thread of its own.

Writes never run on the event loop (a commit with synchronous=FULL is a WAL
fsync): they run on the store's thread, on the writer connection, held by
one transaction at a time (an asyncio lock, held across the caller's awaits,
e.g. the audit append that must precede the commit, and released the moment
the transaction ends). Reads run inline on a second connection: in WAL mode
a read sees the last committed state, never waits for a writer or an fsync,
and a one-row lookup by primary key costs less than a hop to another thread
and back. Any sqlite3 error becomes StoreError naming the file.

The SQL is kept portable (no SQLite-only syntax beyond RETURNING, which
PostgreSQL has too), for the PostgreSQL store behind the same interface.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from enforcer.audit.records import Principal
from enforcer.errors import StoreError
from enforcer.state.store import (APPROVAL_TRANSITIONS, Approval, Call, Claim, CompensationRecord,
                                  IdempotencyRecord, Outcome, Revocation, Task, check_owner)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    declared_goal TEXT NOT NULL,
    declared_actions TEXT NOT NULL,
    started_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    calls_so_far INTEGER NOT NULL DEFAULT 0,
    declared_resources TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS approvals (
    approval_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(task_id),
    decision_id TEXT NOT NULL,
    action_name TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL,
    agent_id TEXT NOT NULL DEFAULT '',
    context TEXT NOT NULL DEFAULT '{}',
    approver TEXT,
    comment TEXT NOT NULL DEFAULT '',
    resolved_at REAL,
    result TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    updated_at REAL NOT NULL DEFAULT 0,
    link_token_sha256 TEXT NOT NULL DEFAULT '',
    link_token_used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS revocations (
    target TEXT NOT NULL CHECK (target IN ('task', 'agent')),
    target_id TEXT NOT NULL,
    revoked_at REAL NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (target, target_id)
);
CREATE TABLE IF NOT EXISTS idempotency (
    agent_id TEXT NOT NULL,
    task_id TEXT NOT NULL REFERENCES tasks(task_id),
    key TEXT NOT NULL,
    tool TEXT NOT NULL,
    args_digest TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'pending_approval', 'done')),
    result TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (agent_id, task_id, key)
);
CREATE TABLE IF NOT EXISTS compensations (
    decision_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(task_id),
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    tool TEXT NOT NULL,
    args TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    compensation TEXT,
    irreversible INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    rollback_token TEXT,
    executed_at REAL NOT NULL,
    rollback_status TEXT,
    rollback_attempts INTEGER NOT NULL DEFAULT 0,
    rollback_error TEXT NOT NULL DEFAULT '',
    rollback_result TEXT,
    approval_id TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS calls (
    task_id TEXT NOT NULL REFERENCES tasks(task_id),
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    tool TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('approve', 'block', 'escalate')),
    amount NUMERIC,
    resource TEXT,
    PRIMARY KEY (task_id, seq)
);
"""
# Columns added after a table was first created: (table, column, definition).
# A database made by an older version gets them on open (ALTER TABLE ... ADD
# COLUMN with a default, so existing rows read as before).
_MIGRATIONS = (
    ("tasks", "declared_resources", "TEXT NOT NULL DEFAULT '[]'"),
    ("approvals", "agent_id", "TEXT NOT NULL DEFAULT ''"),
    ("approvals", "context", "TEXT NOT NULL DEFAULT '{}'"),
    ("approvals", "approver", "TEXT"),
    ("approvals", "comment", "TEXT NOT NULL DEFAULT ''"),
    ("approvals", "resolved_at", "REAL"),
    ("approvals", "result", "TEXT"),
    ("approvals", "version", "INTEGER NOT NULL DEFAULT 1"),
    ("approvals", "updated_at", "REAL NOT NULL DEFAULT 0"),
    ("approvals", "link_token_sha256", "TEXT NOT NULL DEFAULT ''"),
    ("approvals", "link_token_used", "INTEGER NOT NULL DEFAULT 0"),
)
_TASK_COLUMNS = ("task_id, agent_id, declared_goal, declared_actions, started_at, expires_at, calls_so_far, "
                 "declared_resources")
_CALL_COLUMNS = "task_id, seq, at, tool, outcome, amount, resource"
_IDEMPOTENCY_COLUMNS = "agent_id, task_id, key, tool, args_digest, decision_id, status, result, created_at, expires_at"
_COMPENSATION_COLUMNS = ("decision_id, task_id, agent_id, seq, tool, args, idempotency_key, compensation, irreversible, "
                         "outcome, rollback_token, executed_at, rollback_status, rollback_attempts, rollback_error, "
                         "rollback_result, approval_id, updated_at")
_APPROVAL_COLUMNS = ("approval_id, task_id, decision_id, action_name, created_at, expires_at, status, agent_id, "
                     "context, approver, comment, resolved_at, result, version, updated_at")
# The fixed part of an approval, kept as one JSON document (`context`).
_APPROVAL_CONTEXT = ("args", "args_digest", "principal", "reason", "gate", "rule", "risk_score", "risk_flags",
                     "risk_weights", "policy_revision", "untrusted_input_source", "triggering_input",
                     "idempotency_key", "declared_goal", "history", "kind", "compensation_of")


class SqliteStateStore:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aecl-store")
        self._tx_lock: asyncio.Lock | None = None
        # Told (ok, why) when the database starts or stops answering (health).
        self.on_health: Callable[[bool, str], None] | None = None
        self._failing = False
        try:
            self._writer, self._reader = self._thread.submit(self._open).result()
        except sqlite3.Error as e:
            self._thread.shutdown(wait=False)
            raise StoreError(f"{path}: cannot open the state database: {e}") from e

    def _open(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        # A file, always: the reader's isolation from open transactions is
        # WAL's, which an in-memory database does not have.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        target = str(self.path)
        writer = sqlite3.connect(target, isolation_level=None)
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA synchronous=FULL")
        writer.execute("PRAGMA foreign_keys=ON")
        writer.execute("PRAGMA busy_timeout=5000")
        writer.executescript(_SCHEMA)
        _migrate(writer)
        writer.execute("PRAGMA quick_check").fetchone()
        # Used from the event loop's thread only (reads run inline).
        reader = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        reader.execute("PRAGMA busy_timeout=5000")
        reader.execute("PRAGMA query_only=ON")
        return writer, reader

    async def _run(self, fn: Callable[[], T], *, healthy_if_done: bool = True) -> T:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._thread, fn)
        except sqlite3.Error as e:
            raise self._failed(e) from e
        if healthy_if_done:
            self._answered()
        return result

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            result = fn(self._reader)
        except sqlite3.Error as e:
            raise self._failed(e) from e
        self._answered()
        return result

    def _failed(self, e: sqlite3.Error) -> StoreError:
        error = StoreError(f"{self.path}: state database error: {e}")
        # Constraint violations are the caller's (a duplicate id), not the database's health.
        if not isinstance(e, sqlite3.IntegrityError) and not self._failing:
            self._failing = True
            if self.on_health is not None:
                self.on_health(False, str(error))
        return error

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            if self.on_health is not None:
                self.on_health(True, "")

    # -- reads -------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        row = self._read(lambda db: db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = ?",
                                               (task_id,)).fetchone())
        return _task(row) if row else None

    async def get_approval(self, approval_id: str) -> Approval | None:
        return self._read(lambda db: _get_approval(db, approval_id))

    async def list_approvals(self, *, status: str | None = None, agent_id: str | None = None,
                             task_id: str | None = None, limit: int = 50,
                             before: tuple[float, str] | None = None) -> list[Approval]:
        where, params = [], []  # type: ignore[var-annotated]
        for column, value in (("status", status), ("agent_id", agent_id), ("task_id", task_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            where.append("(created_at < ? OR (created_at = ? AND approval_id < ?))")
            params += [before[0], before[0], before[1]]
        sql = (f"SELECT {_APPROVAL_COLUMNS} FROM approvals {'WHERE ' + ' AND '.join(where) if where else ''} "
               "ORDER BY created_at DESC, approval_id DESC LIMIT ?")
        rows = self._read(lambda db: db.execute(sql, (*params, limit)).fetchall())
        return [_approval(r) for r in rows]

    async def get_idempotency(self, agent_id: str, task_id: str, key: str) -> IdempotencyRecord | None:
        return self._read(lambda db: _get_idempotency(db, agent_id, task_id, key))

    async def prune_idempotency(self, *, now: float) -> int:
        async with self.transaction() as tx:
            n = await tx._exec(lambda db: db.execute(
                "DELETE FROM idempotency WHERE expires_at <= ? AND status = 'done'", (now,)).rowcount)
            await tx.commit()
        return n

    async def compensations_of(self, task_id: str) -> list[CompensationRecord]:
        rows = self._read(lambda db: db.execute(
            f"SELECT {_COMPENSATION_COLUMNS} FROM compensations WHERE task_id = ? ORDER BY seq", (task_id,)).fetchall())
        return [_compensation(r) for r in rows]

    async def get_compensation(self, decision_id: str) -> CompensationRecord | None:
        return self._read(lambda db: _get_compensation(db, decision_id))

    async def compensations_where(self, *, outcome: tuple[str, ...] = (),
                                  rollback_status: tuple[str, ...] = ()) -> list[CompensationRecord]:
        o = ", ".join("?" for _ in outcome) or "NULL"
        r = ", ".join("?" for _ in rollback_status) or "NULL"
        rows = self._read(lambda db: db.execute(
            f"SELECT {_COMPENSATION_COLUMNS} FROM compensations WHERE outcome IN ({o}) OR rollback_status IN ({r}) "
            "ORDER BY executed_at, decision_id", (*outcome, *rollback_status)).fetchall())
        return [_compensation(x) for x in rows]

    async def unknown_after_restart(self, *, now: float) -> tuple[list[CompensationRecord], int]:
        unknown = {"status": "unknown", "output": None, "rollback_token": None, "cause": "unknown", "approval_id": "",
                   "sandbox_id": "", "output_truncated": False, "event_id": "",
                   "error": "the service stopped while the call ran: its outcome is unknown"}
        async with self.transaction() as tx:
            rows = await tx._exec(lambda db: db.execute(
                f"UPDATE compensations SET outcome = 'unknown', updated_at = ? WHERE outcome = 'running' "
                f"RETURNING {_COMPENSATION_COLUMNS}", (now,)).fetchall())
            keys = await tx._exec(lambda db: db.execute(
                "SELECT agent_id, task_id, key, result FROM idempotency WHERE status = 'running'").fetchall())
            for agent_id, task_id, key, result in keys:
                # The claim's decision is kept; what happened next is not known.
                doc = {**json.loads(result or "{}"), **unknown}
                await tx._exec(lambda db, a=agent_id, t=task_id, k=key, d=doc: db.execute(
                    "UPDATE idempotency SET status = 'done', result = ? WHERE agent_id = ? AND task_id = ? AND key = ?",
                    (json.dumps(d, allow_nan=False), a, t, k)))
            await tx.commit()
        return [_compensation(x) for x in rows], len(keys)

    async def approvals_with_status(self, statuses: tuple[str, ...]) -> list[Approval]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._read(lambda db: db.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE status IN ({marks}) "
            "ORDER BY created_at, approval_id", statuses).fetchall())
        return [_approval(r) for r in rows]

    async def list_calls(self, task_id: str, *, limit: int) -> list[Call]:
        return self._read(lambda db: _list_calls(db, task_id, limit))

    async def list_revocations(self) -> list[Revocation]:
        rows = self._read(lambda db: db.execute(
            "SELECT target, target_id, revoked_at, reason FROM revocations ORDER BY revoked_at").fetchall())
        return [Revocation(*row) for row in rows]

    # -- transactions --------------------------------------------------------

    def transaction(self) -> _SqliteTx:
        return _SqliteTx(self)

    def close(self) -> None:
        """Blocking, once, at shutdown (after the last transaction)."""
        def shut() -> None:
            self._writer.close()
            self._reader.close()
        try:
            self._thread.submit(shut).result()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: closing the state database failed: {e}") from e
        finally:
            self._thread.shutdown(wait=True)


class _SqliteTx:
    """One transaction on the writer connection. It holds the store's
    transaction lock from BEGIN to COMMIT or ROLLBACK, and no longer: a
    caller may keep the object after committing (the sandbox runs then)
    without holding up anyone else's transaction."""

    def __init__(self, store: SqliteStateStore) -> None:
        self._store = store
        self._db = store._writer
        self.done = False
        self._locked = False

    async def __aenter__(self) -> _SqliteTx:
        store = self._store
        if store._tx_lock is None:
            store._tx_lock = asyncio.Lock()
        await store._tx_lock.acquire()
        self._locked = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.done:
            # Shielded: a cancelled caller must not leave the transaction
            # open on the shared connection.
            await asyncio.shield(self.rollback())

    def _release(self) -> None:
        if self._locked:
            self._locked = False
            assert self._store._tx_lock is not None
            self._store._tx_lock.release()

    async def _exec(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.done:
            raise StoreError("the transaction is already finished")

        def in_tx() -> T:
            # BEGIN with the first statement, in the same hop to the store's thread.
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            return fn(self._db)
        return await self._store._run(in_tx)

    async def create_task(self, task: Task) -> None:
        await self._exec(lambda db: db.execute(
            f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (task.task_id, task.agent_id, task.declared_goal, json.dumps(list(task.declared_actions)),
             task.started_at, task.expires_at, task.calls_so_far, json.dumps(list(task.declared_resources)))))

    async def claim_call(self, task_id: str, agent_id: str, *, now: float, budget: int) -> Claim:
        def claim(db: sqlite3.Connection) -> Claim:
            # The one atomic step: counted only if the task is the caller's,
            # not expired and under budget.
            row = db.execute(
                f"UPDATE tasks SET calls_so_far = calls_so_far + 1 "
                f"WHERE task_id = ? AND agent_id = ? AND expires_at > ? AND calls_so_far < ? "
                f"RETURNING {_TASK_COLUMNS}", (task_id, agent_id, now, budget)).fetchone()
            if row is not None:
                after = _task(row)
                return Claim(_with_calls(after, after.calls_so_far - 1), consumed=True)
            row = db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            task = check_owner(_task(row) if row else None, task_id, agent_id)
            return Claim(task, consumed=False)
        return await self._exec(claim)

    async def record_call(self, task_id: str, *, at: float, tool: str, outcome: Outcome,
                          amount: int | float | None, resource: str | None) -> Call:
        def record(db: sqlite3.Connection) -> Call:
            # The next seq of the task, in the same statement: transactions
            # are serialised (BEGIN IMMEDIATE on the one writer connection).
            row = db.execute(
                f"INSERT INTO calls ({_CALL_COLUMNS}) "
                "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ? FROM calls WHERE task_id = ? "
                f"RETURNING {_CALL_COLUMNS}",
                (task_id, at, tool, outcome, _amount(amount), resource, task_id)).fetchone()
            return Call(*row)
        return await self._exec(record)

    async def list_calls(self, task_id: str, *, limit: int) -> list[Call]:
        return await self._exec(lambda db: _list_calls(db, task_id, limit))

    async def create_approval(self, approval: Approval, *, link_token_sha256: str = "") -> None:
        a = approval
        await self._exec(lambda db: db.execute(
            f"INSERT INTO approvals ({_APPROVAL_COLUMNS}, link_token_sha256) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (a.approval_id, a.task_id, a.decision_id, a.action_name, a.created_at, a.expires_at, a.status,
             a.agent_id, _context_json(a), _principal_json(a.approver), a.comment, a.resolved_at,
             None if a.result is None else json.dumps(a.result, allow_nan=False), a.version,
             a.updated_at, link_token_sha256)))

    async def get_approval(self, approval_id: str) -> Approval | None:
        return await self._exec(lambda db: _get_approval(db, approval_id))

    async def transition_approval(self, approval_id: str, *, expect: str, to: str, now: float,
                                  approver: Principal | None = None, comment: str | None = None,
                                  result: dict[str, Any] | None = None) -> Approval | None:
        if to not in APPROVAL_TRANSITIONS.get(expect, ()):
            raise ValueError(f"an approval cannot go from {expect} to {to}")
        resolving = to in ("approved", "rejected")
        sets = ["status = ?", "version = version + 1", "updated_at = ?"]
        params: list[Any] = [to, now]
        if resolving:
            sets += ["approver = ?", "comment = ?", "resolved_at = ?"]
            params += [_principal_json(approver), comment or "", now]
        if result is not None:
            sets.append("result = ?")
            params.append(json.dumps(result, allow_nan=False))
        sql = (f"UPDATE approvals SET {', '.join(sets)} WHERE approval_id = ? AND status = ? "
               f"RETURNING {_APPROVAL_COLUMNS}")
        row = await self._exec(lambda db: db.execute(sql, (*params, approval_id, expect)).fetchone())
        return _approval(row) if row else None

    async def expire_due_approvals(self, *, now: float, limit: int = 100) -> list[Approval]:
        def expire(db: sqlite3.Connection) -> list[Approval]:
            ids = [r[0] for r in db.execute(
                "SELECT approval_id FROM approvals WHERE status = 'pending' AND expires_at <= ? "
                "ORDER BY expires_at, approval_id LIMIT ?", (now, limit)).fetchall()]
            return _move_all(db, ids, "pending", "expired", now)
        return await self._exec(expire)

    async def consume_link_token(self, approval_id: str, token_sha256: str, *, now: float) -> bool:
        if not token_sha256:
            return False
        n = await self._exec(lambda db: db.execute(
            "UPDATE approvals SET link_token_used = 1 WHERE approval_id = ? AND link_token_sha256 = ? "
            "AND link_token_used = 0 AND expires_at > ?", (approval_id, token_sha256, now)).rowcount)
        return n == 1

    async def get_idempotency(self, agent_id: str, task_id: str, key: str) -> IdempotencyRecord | None:
        return await self._exec(lambda db: _get_idempotency(db, agent_id, task_id, key))

    async def put_idempotency(self, record: IdempotencyRecord) -> None:
        r = record
        await self._exec(lambda db: db.execute(
            f"INSERT INTO idempotency ({_IDEMPOTENCY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.agent_id, r.task_id, r.key, r.tool, r.args_digest, r.decision_id, r.status,
             None if r.result is None else json.dumps(r.result, allow_nan=False), r.created_at, r.expires_at)))

    async def finish_idempotency(self, agent_id: str, task_id: str, key: str, *, status: str,
                                 result: dict[str, Any]) -> None:
        await self._exec(lambda db: db.execute(
            "UPDATE idempotency SET status = ?, result = ? WHERE agent_id = ? AND task_id = ? AND key = ?",
            (status, json.dumps(result, allow_nan=False), agent_id, task_id, key)))

    async def register_compensation(self, record: CompensationRecord) -> CompensationRecord:
        r = record

        def insert(db: sqlite3.Connection) -> CompensationRecord:
            row = db.execute(
                f"INSERT INTO compensations ({_COMPENSATION_COLUMNS}) "
                "SELECT ?, ?, ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, '', NULL, '', ? "
                f"FROM compensations WHERE task_id = ? RETURNING {_COMPENSATION_COLUMNS}",
                (r.decision_id, r.task_id, r.agent_id, r.tool, json.dumps(r.args, allow_nan=False),
                 r.idempotency_key, None if r.compensation is None else json.dumps(r.compensation),
                 int(r.irreversible), r.outcome, r.rollback_token, r.executed_at, r.executed_at,
                 r.task_id)).fetchone()
            return _compensation(row)
        return await self._exec(insert)

    async def finish_compensation(self, decision_id: str, *, outcome: str, rollback_token: str | None,
                                  now: float) -> None:
        await self._exec(lambda db: db.execute(
            "UPDATE compensations SET outcome = ?, rollback_token = ?, updated_at = ? WHERE decision_id = ?",
            (outcome, rollback_token, now, decision_id)))

    async def get_compensation(self, decision_id: str) -> CompensationRecord | None:
        return await self._exec(lambda db: _get_compensation(db, decision_id))

    async def set_rollback(self, decision_id: str, *, expect: tuple[str | None, ...], to: str, now: float,
                           attempts: int | None = None, error: str | None = None,
                           result: dict[str, Any] | None = None, approval_id: str | None = None) -> bool:
        sets, params = ["rollback_status = ?", "updated_at = ?"], [to, now]
        for column, value in (("rollback_attempts", attempts), ("rollback_error", error),
                              ("rollback_result", None if result is None else json.dumps(result, allow_nan=False)),
                              ("approval_id", approval_id)):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        allowed = [e for e in expect if e is not None]
        cond = " OR ".join((["rollback_status IS NULL"] if None in expect else [])
                           + [f"rollback_status = ?" for _ in allowed]) or "0"
        sql = f"UPDATE compensations SET {', '.join(sets)} WHERE decision_id = ? AND ({cond})"
        n = await self._exec(lambda db: db.execute(sql, (*params, decision_id, *allowed)).rowcount)
        return n == 1

    async def revoke(self, revocation: Revocation) -> None:
        await self._exec(lambda db: db.execute(
            "INSERT INTO revocations (target, target_id, revoked_at, reason) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (target, target_id) DO UPDATE SET revoked_at = MAX(revoked_at, excluded.revoked_at), "
            "reason = CASE WHEN excluded.revoked_at >= revoked_at THEN excluded.reason ELSE reason END",
            (revocation.target, revocation.target_id, revocation.revoked_at, revocation.reason)))

    async def end_tasks(self, task_ids: list[str], *, at: float) -> None:
        await self._exec(lambda db: db.executemany(
            "UPDATE tasks SET expires_at = ? WHERE task_id = ? AND expires_at > ?",
            [(at, tid, at) for tid in task_ids]))

    async def live_tasks_of(self, agent_id: str, *, now: float) -> list[str]:
        rows = await self._exec(lambda db: db.execute(
            "SELECT task_id FROM tasks WHERE agent_id = ? AND expires_at > ? ORDER BY started_at",
            (agent_id, now)).fetchall())
        return [r[0] for r in rows]

    async def tasks_of(self, agent_id: str) -> list[str]:
        rows = await self._exec(lambda db: db.execute(
            "SELECT task_id FROM tasks WHERE agent_id = ? ORDER BY started_at", (agent_id,)).fetchall())
        return [r[0] for r in rows]

    async def cancel_pending_approvals(self, task_ids: list[str], *, now: float = 0.0) -> list[Approval]:
        def cancel(db: sqlite3.Connection) -> list[Approval]:
            ids: list[str] = []
            for tid in task_ids:
                ids += [r[0] for r in db.execute(
                    "SELECT approval_id FROM approvals WHERE task_id = ? AND status = 'pending' "
                    "ORDER BY created_at, approval_id", (tid,)).fetchall()]
            return _move_all(db, ids, "pending", "cancelled", now)
        return await self._exec(cancel)

    async def commit(self) -> None:
        await self._finish("COMMIT")

    async def rollback(self) -> None:
        if not self.done:
            await self._finish("ROLLBACK")

    async def _finish(self, statement: str) -> None:
        if self.done:
            raise StoreError("the transaction is already finished")
        self.done = True
        try:
            await self._end(statement)
        finally:
            self._release()

    async def _end(self, statement: str) -> None:

        def end() -> None:
            if not self._db.in_transaction:
                return
            try:
                self._db.execute(statement)
            except sqlite3.Error:
                if self._db.in_transaction:  # a failed COMMIT leaves it open
                    self._db.execute("ROLLBACK")
                raise
        # A rollback proves nothing about the database's health; a commit does.
        await self._store._run(end, healthy_if_done=statement == "COMMIT")


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns an older database lacks, in one transaction (two
    processes opening the same old file must not both add a column).
    A current database takes no write lock for it."""
    if all(column in _columns(db, table) for table, column, _ in _MIGRATIONS):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, column, definition in _MIGRATIONS:
            if column not in _columns(db, table):
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})").fetchall()}


def _move_all(db: sqlite3.Connection, ids: list[str], expect: str, to: str, now: float) -> list[Approval]:
    moved = []
    for approval_id in ids:
        row = db.execute(f"UPDATE approvals SET status = ?, version = version + 1, updated_at = ? "
                         f"WHERE approval_id = ? AND status = ? RETURNING {_APPROVAL_COLUMNS}",
                         (to, now, approval_id, expect)).fetchone()
        if row is not None:
            moved.append(_approval(row))
    return moved


def _get_idempotency(db: sqlite3.Connection, agent_id: str, task_id: str, key: str) -> IdempotencyRecord | None:
    row = db.execute(f"SELECT {_IDEMPOTENCY_COLUMNS} FROM idempotency WHERE agent_id = ? AND task_id = ? AND key = ?",
                     (agent_id, task_id, key)).fetchone()
    if row is None:
        return None
    *head, result, created, expires = row
    return IdempotencyRecord(*head, None if result is None else json.loads(result), created, expires)


def _get_compensation(db: sqlite3.Connection, decision_id: str) -> CompensationRecord | None:
    row = db.execute(f"SELECT {_COMPENSATION_COLUMNS} FROM compensations WHERE decision_id = ?",
                     (decision_id,)).fetchone()
    return _compensation(row) if row else None


def _compensation(row: tuple[Any, ...]) -> CompensationRecord:
    (decision_id, task_id, agent_id, seq, tool, args, key, compensation, irreversible, outcome, token, executed_at,
     rb_status, attempts, error, rb_result, approval_id, updated_at) = row
    return CompensationRecord(
        decision_id, task_id, agent_id, seq, tool, json.loads(args), key,
        None if compensation is None else json.loads(compensation), bool(irreversible), outcome, token,
        executed_at, rb_status, attempts, error, None if rb_result is None else json.loads(rb_result),
        approval_id, updated_at)


def _get_approval(db: sqlite3.Connection, approval_id: str) -> Approval | None:
    row = db.execute(f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE approval_id = ?", (approval_id,)).fetchone()
    return _approval(row) if row else None


def _principal_json(p: Principal | None) -> str | None:
    return None if p is None else json.dumps(p.to_dict())


def _principal(text: str | None) -> Principal | None:
    return None if text is None else Principal(**json.loads(text))


def _context_json(a: Approval) -> str:
    doc = {name: getattr(a, name) for name in _APPROVAL_CONTEXT}
    doc["principal"] = None if a.principal is None else a.principal.to_dict()
    doc["risk_flags"] = list(a.risk_flags)
    doc["history"] = list(a.history)
    return json.dumps(doc, allow_nan=False, sort_keys=True)


def _approval(row: tuple[Any, ...]) -> Approval:
    (approval_id, task_id, decision_id, action_name, created_at, expires_at, status, agent_id, context,
     approver, comment, resolved_at, result, version, updated_at) = row
    ctx = json.loads(context or "{}")
    fixed: dict[str, Any] = {name: ctx[name] for name in _APPROVAL_CONTEXT if name in ctx}
    if "principal" in fixed:
        fixed["principal"] = None if fixed["principal"] is None else Principal(**fixed["principal"])
    if "risk_flags" in fixed:
        fixed["risk_flags"] = tuple(fixed["risk_flags"])
    if "history" in fixed:
        fixed["history"] = tuple(fixed["history"])
    return Approval(approval_id, task_id, decision_id, action_name, created_at, expires_at, status,
                    agent_id=agent_id, approver=_principal(approver), comment=comment, resolved_at=resolved_at,
                    result=None if result is None else json.loads(result), version=version,
                    updated_at=updated_at, **fixed)


def _list_calls(db: sqlite3.Connection, task_id: str, limit: int) -> list[Call]:
    rows = db.execute(f"SELECT {_CALL_COLUMNS} FROM calls WHERE task_id = ? ORDER BY seq DESC LIMIT ?",
                      (task_id, limit)).fetchall()
    return [Call(*row) for row in reversed(rows)]


# SQLite's INTEGER is 64-bit: a larger whole number is kept as a REAL.
_INT64 = 2**63 - 1


def _amount(amount: int | float | None) -> int | float | None:
    if isinstance(amount, int) and not isinstance(amount, bool) and abs(amount) > _INT64:
        return float(amount)
    return amount


def _with_calls(task: Task, calls: int) -> Task:
    return replace(task, calls_so_far=calls)


def _task(row: tuple[Any, ...]) -> Task:
    task_id, agent_id, goal, actions, started, expires, calls, resources = row
    return Task(task_id, agent_id, goal, tuple(json.loads(actions)), started, expires, calls,
                tuple(json.loads(resources)))
