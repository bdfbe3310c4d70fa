"""Policy replay: re-decide the calls of an audit log under a candidate policy.

Every decision entry of the log carries `policy_input`, the complete document
its policy decided on. Evaluating those inputs under a candidate policy shows,
before the candidate is deployed, exactly which past decisions it would have
decided differently: approve -> block, escalate -> approve, and so on.

The core, `replay(entries, engine)`, is pure apart from the engine: it takes
parsed log entries and any PolicyEngine and returns a ReplayReport. As in the
pipeline, an engine error under the candidate counts as BLOCK (fail closed).

A change is a different outcome. A decision that keeps its outcome but is now
reached through another gate or with another reason is counted as "reworded",
not changed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enforcer.audit.files import log_files
from enforcer.audit.records import DecisionRecord, parse_record
from enforcer.errors import AuditUnavailable, IntegrityError, RecordError
from enforcer.policy.evaluate import evaluate_decision

OUTCOMES = ("approve", "escalate", "block")
DECISION_KIND = "decision"


class LogReadError(IntegrityError):
    """A log line cannot be read as an audit entry. `line` is 1-based."""

    code = "audit_entry_unreadable"

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}: line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Verdict:
    outcome: str
    gate: str
    reason: str
    risk_score: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "gate": self.gate, "reason": self.reason, "risk_score": self.risk_score}


@dataclass(frozen=True)
class Change:
    line: int  # 1-based line of the entry in the log
    event_id: str
    decision_id: str
    agent_id: str
    action_name: str
    recorded_revision: str
    old: Verdict
    new: Verdict

    @property
    def transition(self) -> str:
        return f"{self.old.outcome}->{self.new.outcome}"

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "event_id": self.event_id,
            "decision_id": self.decision_id,
            "agent_id": self.agent_id,
            "action_name": self.action_name,
            "recorded_revision": self.recorded_revision,
            "transition": self.transition,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
        }


@dataclass(frozen=True)
class Skipped:
    line: int
    event_id: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "event_id": self.event_id, "reason": self.reason}


@dataclass
class ReplayReport:
    candidate_revision: str
    entries: int = 0  # log entries read, of every kind
    replayed: int = 0  # decision entries re-decided
    unchanged: int = 0  # same outcome (reworded ones included)
    changes: list[Change] = field(default_factory=list)  # different outcome
    reworded: list[Change] = field(default_factory=list)  # same outcome, other gate or reason
    skipped: list[Skipped] = field(default_factory=list)  # decision entries that could not be replayed
    engine_errors: int = 0  # candidate evaluations that failed (counted as block)
    recorded_revisions: Counter = field(default_factory=Counter)

    @property
    def changed(self) -> int:
        return len(self.changes)

    def transitions(self) -> Counter:
        return Counter(c.transition for c in self.changes)

    def summary_line(self) -> str:
        line = f"{self.replayed} decisions replayed, {self.changed} would change"
        counts = self.transitions()
        if counts:
            # Most frequent first, ties in a fixed order so output is stable.
            order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            line += " (" + ", ".join(f"{n} {t}" for t, n in order) + ")"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate_revision": self.candidate_revision,
            "recorded_revisions": dict(self.recorded_revisions),
            "entries": self.entries,
            "replayed": self.replayed,
            "unchanged": self.unchanged,
            "changed": self.changed,
            "reworded": len(self.reworded),
            "skipped": len(self.skipped),
            "engine_errors": self.engine_errors,
            "transitions": dict(sorted(self.transitions().items())),
            "summary": self.summary_line(),
            "changes": [c.to_json() for c in self.changes],
            "reworded_decisions": [c.to_json() for c in self.reworded],
            "skipped_decisions": [s.to_json() for s in self.skipped],
        }


# -- the core ------------------------------------------------------------------


def _record_of(entry: Any) -> dict[str, Any] | None:
    """An audit entry's record; a bare record is accepted too."""
    if not isinstance(entry, dict):
        return None
    record = entry.get("record", entry if "kind" in entry else None)
    return record if isinstance(record, dict) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def replay(entries: Iterable[dict[str, Any]], engine: Any) -> ReplayReport:
    """Re-decide every decision entry under `engine`; entries are numbered from
    1 in the order given (the log's line numbers when read with read_log)."""
    report = ReplayReport(candidate_revision=getattr(engine, "revision", ""))
    for line, entry in enumerate(entries, start=1):
        report.entries += 1
        record = _record_of(entry)
        if record is None:
            report.skipped.append(Skipped(line, "", "entry has no record object"))
            continue
        if record.get("kind") != DECISION_KIND:
            continue
        event_id = _text(record.get("event_id"))
        if "policy_input" not in record:
            report.skipped.append(Skipped(line, event_id, "no policy_input recorded (logged by an older version)"))
            continue
        try:
            typed = parse_record(record)  # read through the record's one definition
        except RecordError as e:
            report.skipped.append(Skipped(line, event_id, f"not a readable decision record: {e}"))
            continue
        assert isinstance(typed, DecisionRecord)
        if typed.outcome not in OUTCOMES:
            why = f"recorded outcome {typed.outcome!r} is not a decision"
            report.skipped.append(Skipped(line, event_id, why))
            continue
        decision_id = typed.decision_id or ""
        # The fail-closed rule, as in the pipeline: an engine error is a block.
        decision = evaluate_decision(engine, typed.policy_input, decision_id=decision_id,
                                     revision=report.candidate_revision)
        if decision.failed_closed:
            report.engine_errors += 1
        report.replayed += 1
        report.recorded_revisions[typed.policy_applied] += 1
        old = Verdict(typed.outcome, typed.gate, typed.reason, typed.risk_score)
        new = Verdict(decision.outcome, decision.gate, decision.reason, decision.risk_score)
        change = Change(
            line=line, event_id=event_id, decision_id=decision_id, agent_id=typed.agent_id,
            action_name=typed.action_name, recorded_revision=typed.policy_applied, old=old, new=new,
        )
        if old.outcome != new.outcome:
            report.changes.append(change)
            continue
        report.unchanged += 1
        if (old.gate, old.reason) != (new.gate, new.reason):
            report.reworded.append(change)
    return report


# -- reading a log ---------------------------------------------------------------


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    """The log's entries in order, across its sealed segments. A line that is
    not a JSON object with a `record` object stops the replay with an error
    naming the file and line; nothing here checks signatures (that is `aecl verify`)."""
    for segment in log_files(path):
        yield from _read_file(segment)


def _read_file(path: Path) -> Iterator[dict[str, Any]]:
    name = str(path)
    try:
        f = path.open("rb")
    except OSError as e:
        raise AuditUnavailable(f"{name}: cannot read: {e.strerror}") from e
    with f:
        for n, raw in enumerate(f, start=1):
            text = raw.rstrip(b"\n")
            if not text.strip():
                raise LogReadError(name, n, "empty line; an audit log has one JSON entry per line")
            try:
                entry = json.loads(text)
            except UnicodeDecodeError as e:
                raise LogReadError(name, n, f"not UTF-8: {e}") from None
            except ValueError as e:
                raise LogReadError(name, n, f"not valid JSON: {e}") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("record"), dict):
                raise LogReadError(name, n, "not an audit entry (a JSON object with a 'record' object)")
            yield entry


# -- human output ------------------------------------------------------------------


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(rows: list[Change], *, reason_width: int = 60) -> str:
    header = ("LINE", "EVENT_ID", "AGENT", "ACTION", "CHANGE", "GATE", "OLD REASON", "NEW REASON")
    body = [
        (
            str(c.line), c.event_id, c.agent_id, c.action_name,
            f"{c.old.outcome} -> {c.new.outcome}", f"{c.old.gate} -> {c.new.gate}",
            _clip(c.old.reason, reason_width), _clip(c.new.reason, reason_width),
        )
        for c in rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        cells = [r[i].rjust(widths[i]) if i == 0 else r[i].ljust(widths[i]) for i in range(len(r))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_report(report: ReplayReport, *, show_reworded: bool = False) -> str:
    out: list[str] = []
    if report.changes:
        out.append(render_table(report.changes))
        out.append("")
    if show_reworded and report.reworded:
        out.append("Same outcome, different gate or reason:")
        out.append(render_table(report.reworded))
        out.append("")
    if report.skipped:
        out.append(f"{len(report.skipped)} decision entries skipped:")
        for s in report.skipped[:20]:
            out.append(f"  line {s.line}: {s.event_id or '-'}: {s.reason}")
        if len(report.skipped) > 20:
            out.append(f"  ... and {len(report.skipped) - 20} more (see --json)")
    notes = []
    if report.reworded:
        notes.append(f"{len(report.reworded)} keep their outcome with a different gate or reason"
                     + ("" if show_reworded else " (--show-reworded lists them)"))
    if report.engine_errors:
        notes.append(f"{report.engine_errors} candidate evaluations failed and count as block")
    for note in notes:
        out.append(f"note: {note}")
    out.append(report.summary_line())
    return "\n".join(out)
