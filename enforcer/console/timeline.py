"""The verified audit log as the console shows it: a task's timeline, and
the log's verification status beside it.

The whole log is verified on each request (enforcer.audit.verified, the
same check as `aecl verify`), in a worker thread so the service's event loop
keeps serving, and at most one verification at a time. A log that does not
verify yields a failure with its reason and no entries: the console never
shows a timeline it could not verify.

The service appends while the console reads; a read that caught the log
mid-append is retried (AuditUnavailable "changed while it was read", or a
last line not yet complete) before it is reported as a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enforcer.audit.keys import load_signing_key
from enforcer.audit.records import (
    ApprovalRecord,
    ConnectorRequestRecord,
    DecisionRecord,
    ExecutionRecord,
    NotificationRecord,
    RejectedRecord,
    TaskStarted,
)
from enforcer.audit.report import compact, verification
from enforcer.audit.story import execution_facts, select
from enforcer.audit.verified import VerifiedEntry, VerifiedLog, read_verified
from enforcer.config import AuditConfig
from enforcer.errors import AeclError, AuditError, AuditUnavailable, VerificationError

READ_ATTEMPTS = 3
RETRY_PAUSE_S = 0.2


def audit_public_keys(audit: AuditConfig) -> list[Ed25519PublicKey]:
    """The keys the service's log is signed with: the signing key's public
    half, and the previous key's across a rotation (as `aecl verify
    --pubkey` is given them)."""
    keys = [load_signing_key(audit.signing_key).public_key()]
    if audit.previous_signing_key is not None:
        keys.append(load_signing_key(audit.previous_signing_key).public_key())
    return keys


@dataclass(frozen=True)
class LogStatus:
    """The outcome of verifying the log: `log` when it verified, else why not."""

    log: VerifiedLog | None
    summary: dict[str, Any] = field(default_factory=dict)  # report.verification() when verified
    error_class: str = ""
    error: str = ""

    @property
    def verified(self) -> bool:
        return self.log is not None


class LogReader:
    def __init__(self, path: Path, keys: list[Ed25519PublicKey]) -> None:
        self.path = path
        self.keys = keys
        self._one_at_a_time = asyncio.Semaphore(1)

    async def status(self) -> LogStatus:
        async with self._one_at_a_time:
            return await asyncio.to_thread(self._read)

    def _read(self) -> LogStatus:
        last: AeclError | None = None
        for attempt in range(READ_ATTEMPTS):
            try:
                log = read_verified(self.path, self.keys)
                return LogStatus(log, verification(log, None))
            except AuditUnavailable as e:  # changed while read: read again
                last = e
            except VerificationError as e:
                if e.kind not in ("truncated", "malformed"):
                    return _failed(e)
                last = e  # maybe a line still being written: look again
            except AuditError as e:  # NothingVerified, an unreadable file, ...
                return _failed(e)
            if attempt + 1 < READ_ATTEMPTS:
                time.sleep(RETRY_PAUSE_S)
        assert last is not None
        return _failed(last)


def _failed(e: AeclError) -> LogStatus:
    return LogStatus(None, error_class=getattr(e, "kind", "") or e.code, error=str(e))


@dataclass(frozen=True)
class TimelineRow:
    seq: int
    at: str
    kind: str
    rpc: str
    tool: str
    outcome: str
    reason: str
    details: tuple[str, ...]
    approval_id: str = ""


def task_timeline(log: VerifiedLog, task_id: str) -> list[TimelineRow]:
    """Every entry of the task, in log order."""
    return [timeline_row(e) for e in select(log, task=task_id)]


def timeline_row(e: VerifiedEntry) -> TimelineRow:
    r = e.record
    details: list[str] = []
    if isinstance(r, TaskStarted):
        details.append(f"goal {compact(r.input_payload.get('declared_goal', ''))}")
    elif isinstance(r, DecisionRecord):
        details.append(f"{r.gate}/{r.rule}")
        if r.risk_score is not None:
            details.append(f"risk {r.risk_score:g}")
        if r.risk_flags:
            details.append("flags " + ", ".join(f"{f}={r.risk_weights.get(f, '?')}" for f in r.risk_flags))
        if r.shadow:
            details.append("shadow" + ("" if r.enforced else ", not enforced"))
    elif isinstance(r, ExecutionRecord):
        details += execution_facts(r)
    elif isinstance(r, ConnectorRequestRecord):
        details.append(f"{r.connector} {r.method} {r.path} -> {r.status}")
        if r.refused:
            details.append(f"refused {r.refused}")
    elif isinstance(r, ApprovalRecord):
        details.append(f"{r.from_status} -> {r.transition}")
        if r.comment:
            details.append(f"comment {compact(r.comment)}")
    elif isinstance(r, NotificationRecord):
        details.append(f"{r.channel} attempt {r.attempt}" + (" delivered" if r.delivered else f" {r.error}"))
    elif isinstance(r, RejectedRecord):
        details.append(f"error {r.error_code or r.error_class}")
    args = _args(r)
    if args is not None:
        details.append(f"args {compact(args)}")
    sandbox = getattr(r, "sandbox_id", None)
    if sandbox:
        details.append(f"sandbox {sandbox}")
    return TimelineRow(
        seq=e.seq, at=r.timestamp, kind=r.KIND, rpc=str(getattr(r, "rpc", "")),
        tool=str(getattr(r, "action_name", "")), outcome=str(getattr(r, "outcome", "")),
        reason=str(getattr(r, "reason", "")), details=tuple(details),
        approval_id=str(getattr(r, "hitl_approval_id", "") or ""))


def _args(r: Any) -> Any:
    payload = getattr(r, "input_payload", None)
    if isinstance(r, (DecisionRecord, ExecutionRecord)) and isinstance(payload, dict):
        return payload.get("args")
    return None


def entries_of(status: LogStatus) -> Iterable[VerifiedEntry]:
    return status.log.entries if status.log is not None else ()


__all__ = ["LogReader", "LogStatus", "TimelineRow", "audit_public_keys", "entries_of", "task_timeline",
           "timeline_row"]
