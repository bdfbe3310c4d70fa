"""SQLite state store. One connection, serialised by a lock; WAL for durability
without blocking readers."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from enforcer.errors import NotFound
from enforcer.state.store import Approval, Task

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    declared_goal TEXT NOT NULL,
    declared_actions TEXT NOT NULL,
    started_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    calls_so_far INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS approvals (
    approval_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(task_id),
    decision_id TEXT NOT NULL,
    action_name TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL
);
"""


class SqliteStateStore:
    def __init__(self, path: Path) -> None:
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)

    def create_task(self, task: Task) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    task.task_id,
                    task.agent_id,
                    task.declared_goal,
                    json.dumps(list(task.declared_actions)),
                    task.started_at,
                    task.expires_at,
                    task.calls_so_far,
                ),
            )

    def get_task(self, task_id: str) -> Task | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _task(row) if row else None

    def claim_call(self, task_id: str) -> Task:
        with self._lock:
            row = self._db.execute(
                "UPDATE tasks SET calls_so_far = calls_so_far + 1 WHERE task_id = ? RETURNING *",
                (task_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"task '{task_id}' does not exist")
        task = _task(row)
        return Task(**{**task.__dict__, "calls_so_far": task.calls_so_far - 1})

    def create_approval(self, approval: Approval) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO approvals VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    approval.approval_id,
                    approval.task_id,
                    approval.decision_id,
                    approval.action_name,
                    approval.created_at,
                    approval.expires_at,
                    approval.status,
                ),
            )

    def get_approval(self, approval_id: str) -> Approval | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM approvals WHERE approval_id = ?", (approval_id,)
            ).fetchone()
        return Approval(*row) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _task(row: tuple) -> Task:
    task_id, agent_id, goal, actions, started, expires, calls = row
    return Task(task_id, agent_id, goal, tuple(json.loads(actions)), started, expires, calls)
