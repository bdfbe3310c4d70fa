"""The pipeline's one way into the audit log.

Every stage appends through Journal, so every record is counted by the
metrics exactly when it is durable, the same place for every kind.
"""

from __future__ import annotations

import asyncio

from enforcer.audit.log import Appended, AuditLog
from enforcer.audit.records import Record
from enforcer.metrics import Metrics


class Journal:
    def __init__(self, audit: AuditLog, metrics: Metrics | None = None) -> None:
        self.audit = audit
        self.metrics = metrics

    def start(self, record: Record) -> asyncio.Future[Appended]:
        """Queue a record now; the future resolves once it is fsynced. Lets a
        caller overlap the fsync with other work (the sandbox's start-up)."""
        fut = self.audit.append_async(record)
        if self.metrics is not None:
            metrics = self.metrics
            fut.add_done_callback(lambda f: f.cancelled() or f.exception() or metrics.observe(record))
        return fut

    async def append(self, record: Record) -> Appended:
        """Append and wait until durable. A cancelled caller stops waiting;
        the entry is written (and counted) all the same."""
        return await asyncio.shield(self.start(record))
