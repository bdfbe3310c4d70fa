"""Real AECL logs for the auditor's commands: typed records of every call
kind, as the service writes them, appended by the real writer."""

from __future__ import annotations

import calendar
from pathlib import Path
from typing import Any

from enforcer.audit.keys import load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.audit.records import (DecisionRecord, ExecutionRecord, RejectedRecord, TaskStarted,
                                    timestamp)

T0 = calendar.timegm((2026, 12, 1, 10, 0, 0))  # 2026-12-01T10:00:00Z
AGENT = "finance_agent_v2"


def task_records(task: str, *, start: float = T0, agent: str = AGENT, payload: str = "",
                 key: str = "") -> list[Any]:
    """One task's story: a dry run, an executed call, an escalation (with
    `payload` as its triggering input and in its arguments), a block and a
    rejected request."""
    k = key or task[-4:]

    def ts(s: float) -> str:
        return timestamp(start + s)

    common = {"agent_id": agent, "task_id": task, "policy_applied": "sha256:" + "ab" * 32}
    return [
        TaskStarted(timestamp=ts(0), rpc="StartTask", outcome="started", reason="task expires in 20 minutes",
                    input_payload={"declared_goal": "Pay vendor invoices", "declared_actions": []}, **common),
        DecisionRecord(timestamp=ts(1), rpc="Decide", action_name="read_invoice", outcome="approve",
                       input_payload={"args": {"invoice_id": "INV-1001"},
                                      "context": {"untrusted_input_source": False, "triggering_input": ""}},
                       reason="all gates passed; risk score 0 within threshold 0.6", risk_score=0.0,
                       gate="risk", rule="risk.within_threshold", decision_id=f"dec_dry{k}", **common),
        DecisionRecord(timestamp=ts(2), rpc="Execute", action_name="read_invoice", outcome="approve",
                       input_payload={"args": {"invoice_id": "INV-1002"},
                                      "context": {"untrusted_input_source": False, "triggering_input": ""}},
                       reason="all gates passed; risk score 0 within threshold 0.6", risk_score=0.0,
                       gate="risk", rule="risk.within_threshold", decision_id=f"dec_run{k}", **common),
        ExecutionRecord(timestamp=ts(3), rpc="Execute", action_name="read_invoice", outcome="succeeded",
                        input_payload={"args": {"invoice_id": "INV-1002"}}, reason="tool succeeded",
                        decision_id=f"dec_run{k}", sandbox_id=f"sbx_{k}", exit_code=0, duration_ms=12.5,
                        **common),
        DecisionRecord(timestamp=ts(4), rpc="Execute", action_name="transfer_funds", outcome="escalate",
                       input_payload={"args": {"vendor": "V-221", "amount": 100000, "reference": payload},
                                      "context": {"untrusted_input_source": True, "triggering_input": payload}},
                       reason="context rule 'requires_human_approval' applies", risk_score=0.7,
                       gate="context_rules", rule="context_rules.requires_human_approval",
                       risk_flags=("large_amount", "untrusted_input"),
                       risk_weights={"large_amount": 0.5, "untrusted_input": 0.2},
                       decision_id=f"dec_esc{k}", hitl_approval_id=f"apr_{k}", **common),
        DecisionRecord(timestamp=ts(5), rpc="Execute", action_name="delete_record", outcome="block",
                       input_payload={"args": {"record_id": "INV-1001"},
                                      "context": {"untrusted_input_source": False, "triggering_input": ""}},
                       reason="action 'delete_record' is on the block list", risk_score=0.7, gate="allowlist",
                       rule="allowlist.blocked", decision_id=f"dec_blk{k}", **common),
        RejectedRecord(timestamp=ts(6), rpc="Execute", action_name="no_such_tool", outcome="rejected",
                       input_payload={"args": {}}, reason="call.name: unknown tool 'no_such_tool'",
                       error_class="InvalidRequest", error_code="invalid_argument", **common),
    ]


def write_records(path: Path, priv: Path, records: list[Any], *, max_segment_bytes: int | None = None,
                  every: int = 4, bulk: bool = False) -> Path:
    """Append the records one by one (a checkpoint every `every` entries, a
    segment sealed at `max_segment_bytes`), or with bulk, all in group commits."""
    log = AuditLog(path, load_signing_key(priv), checkpoint_every=every, checkpoint_interval_s=3600,
                   max_segment_bytes=max_segment_bytes)
    docs = [r if isinstance(r, dict) else r.to_dict() for r in records]
    if bulk:
        for f in [log.submit(d) for d in docs]:
            f.result()
    else:
        for d in docs:
            log.append(d)
    log.close()
    return path


def write_story(path: Path, priv: Path, *, tasks: int = 2, payload: str = "",
                max_segment_bytes: int | None = None) -> list[str]:
    """A log of `tasks` tasks an hour apart; returns their ids."""
    ids = [f"tsk_{i:032x}" for i in range(1, tasks + 1)]
    records = [r for i, t in enumerate(ids) for r in task_records(t, start=T0 + 3600 * i, payload=payload)]
    write_records(path, priv, records, max_segment_bytes=max_segment_bytes)
    return ids
