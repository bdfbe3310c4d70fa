"""Revoked tasks and agents, as the authenticator checks them on every call.

The store's `revocations` table is the record (each row committed after its
`revocation` audit entry); this is its in-memory mirror, loaded at start-up
and updated by the pipeline once a revocation commits, so that checking a
token costs two dictionary lookups, not a database read. (Several replicas
on one database, a later stage, will need to read the table instead.)
"""

from __future__ import annotations

from collections.abc import Iterable

from enforcer.state.store import Revocation


class Revocations:
    def __init__(self, rows: Iterable[Revocation] = ()) -> None:
        self._tasks: dict[str, float] = {}
        self._agents: dict[str, float] = {}
        for row in rows:
            self.add(row)

    def add(self, row: Revocation) -> None:
        table = self._tasks if row.target == "task" else self._agents
        table[row.target_id] = max(row.revoked_at, table.get(row.target_id, row.revoked_at))

    def task_revoked(self, task_id: str) -> bool:
        return task_id in self._tasks

    def agent_refuses(self, agent_id: str, issued_at: float) -> bool:
        """True when the agent was revoked at or after `issued_at`: whatever
        it held then (a token, a key, a certificate) no longer counts."""
        at = self._agents.get(agent_id)
        return at is not None and issued_at <= at
