"""Renderings of a verified log for auditors: the timeline of `aecl audit
replay`, the task list of `aecl audit tasks`, and the HTML / CSV / JSON
report of `aecl audit report`.

Every value that comes from the log is attacker-controlled (agent ids, tool
arguments, triggering inputs are whatever the agent sent). So:
- terminal text shows control and bidirectional-formatting characters as
  escapes (`\\x1b`, `\\u202e`): a log line cannot drive the auditor's terminal;
- HTML escapes every value (html.escape, quotes included), shows the same
  escapes for invisible characters, embeds its one stylesheet, has no script,
  no link, no image, and a Content-Security-Policy that allows nothing but
  that stylesheet (by its hash): even a value that escaped the escaping
  could neither run nor load anything;
- CSV prefixes a cell that starts with = + - @ tab or CR with a quote, so a
  spreadsheet does not evaluate it as a formula.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import unicodedata
from datetime import datetime, timezone
from typing import Any

from enforcer import __version__
from enforcer.audit.keys import key_id
from enforcer.audit.records import DecisionRecord, ExecutionRecord, RejectedRecord, TaskStarted
from enforcer.audit.story import Call, TaskSummary, execution_facts
from enforcer.audit.verified import VerifiedEntry, VerifiedLog


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one}" if n == 1 else f"{n} {many or one + 's'}"


def visible(value: Any) -> str:
    """A value as text with control and invisible formatting characters
    (C0, C1, DEL, bidi overrides, zero-width, line/paragraph separators)
    written as escapes."""
    text = value if isinstance(value, str) else str(value)
    out = []
    for c in text:
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") and c not in "\n\t":
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


def oneline(value: Any) -> str:
    """visible(), with newlines and tabs escaped too: one terminal line."""
    return visible(value).replace("\n", "\\n").replace("\t", "\\t")


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# ----------------------------------------------------------- verification


def checked_against(log: VerifiedLog, checkpoint_file: str | None) -> dict[str, Any] | None:
    r = log.report
    cp = r.trusted or r.last_checkpoint
    if cp is None:
        return None
    return {
        "source": "trusted checkpoint" if r.trusted is not None else "latest checkpoint in the log",
        "file": checkpoint_file if r.trusted is not None else None,
        "origin": cp.origin, "size": cp.size, "root": cp.root.hex(),
    }


def verification(log: VerifiedLog, checkpoint_file: str | None) -> dict[str, Any]:
    r = log.report
    against = checked_against(log, checkpoint_file)
    if r.trusted is not None:
        note = ("the log extends the trusted checkpoint: nothing it covers was cut, changed or rolled back")
    else:
        note = ("no --checkpoint: every entry verifies, but a log cut short at its end, or rewritten by someone "
                "holding the key, would also verify; pass a checkpoint kept elsewhere to rule that out")
    return {
        "result": "verified", "log": str(log.path), "entries": r.entries, "segments": r.segments,
        "checkpoints": r.checkpoints, "root": r.root.hex(), "keys": [key_id(k) for k in r.keys],
        "checked_against": against,
        "entries_after_checkpoint": r.entries - against["size"] if against else r.entries,
        "note": note,
    }


def verification_line(log: VerifiedLog, checkpoint_file: str | None) -> str:
    r = log.report
    segs = f" in {plural(r.segments, 'segment')}" if r.segments > 1 else ""
    head = f"verified: {plural(r.entries, 'entry', 'entries')}{segs}, {plural(r.checkpoints, 'checkpoint')}"
    against = checked_against(log, checkpoint_file)
    if against is None:
        return head + "; no checkpoint to check against (a log cut short would also verify)"
    if r.trusted is not None:
        return (f"{head}; the log extends the trusted checkpoint {oneline(checkpoint_file)} "
                f"(size {against['size']}, root {against['root']})")
    return (f"{head}; checked against the log's latest checkpoint (size {against['size']}) only: without "
            "--checkpoint a log cut short at its end still verifies")


# --------------------------------------------------------------- timeline


def timeline_line(e: VerifiedEntry) -> str:
    """One entry of a task's story, on one line."""
    r = e.record
    kind = r.KIND
    rpc = getattr(r, "rpc", "")
    shown_mode = "Decide (dry run)" if rpc == "Decide" else rpc
    agent = getattr(r, "agent_id", "")
    what = ""
    if isinstance(r, TaskStarted):
        goal = r.input_payload.get("declared_goal", "")
        what = f"goal {compact(goal)}"
    elif hasattr(r, "input_payload"):
        what = f"{r.action_name} {compact(r.input_payload.get('args', {}))}"
    outcome = str(getattr(r, "outcome", "")).upper()
    extra = []
    if isinstance(r, DecisionRecord):
        extra.append(f"{r.gate}/{r.rule}")
    reason = getattr(r, "reason", "")
    tags = []
    if isinstance(r, DecisionRecord):
        ctx = r.input_payload.get("context", {})
        if isinstance(ctx, dict) and ctx.get("triggering_input"):
            tags.append(f"triggering_input {compact(ctx['triggering_input'])}")
        if isinstance(ctx, dict) and ctx.get("untrusted_input_source"):
            tags.append("untrusted input")
        if r.risk_score is not None:
            tags.append(f"risk {r.risk_score:g}")
        if r.risk_flags:
            tags.append("flags " + ",".join(f"{f}={r.risk_weights.get(f, '?')}" for f in r.risk_flags))
        if r.shadow:
            tags.append("SHADOW" + ("" if r.enforced else ", not enforced"))
    if isinstance(r, ExecutionRecord):
        tags += execution_facts(r)
    if isinstance(r, RejectedRecord):
        tags.append(f"error {r.error_code or r.error_class}")
    for name in ("sandbox_id", "hitl_approval_id"):
        if getattr(r, name, None):
            tags.append(f"{name.split('_')[0] if name == 'sandbox_id' else 'approval'} {getattr(r, name)}")
    fields = [r.timestamp, f"seq {e.seq:<6}", f"{kind:<12}", f"{shown_mode:<16}", agent, what, outcome,
              *extra, reason]
    line = "  ".join(oneline(f) for f in fields if f != "")
    return line + "".join(f"  [{oneline(t)}]" for t in tags)


# ------------------------------------------------------------------ tasks


def outcome_counts(t: TaskSummary) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(t.outcomes.items()))


def tasks_text(tasks: list[TaskSummary]) -> list[str]:
    rows = [("TASK", "AGENT", "FIRST", "LAST", "ENTRIES", "OUTCOMES")]
    for t in tasks:
        agent = t.agent_id + (f" (+{', '.join(sorted(t.other_agents))})" if t.other_agents else "")
        rows.append((t.task_id, agent, t.first, t.last, str(t.entries), outcome_counts(t)))
    rows = [tuple(oneline(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return ["  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5] for row in rows]


# ----------------------------------------------------------------- report


def _scope(task: str | None, since: str | None, until: str | None) -> str:
    parts = []
    if task:
        parts.append(f"task {task}")
    if since or until:
        parts.append(f"from {since or 'the start'} until {until or 'the end'}")
    return ", ".join(parts) or "the whole log"


def report_json(log: VerifiedLog, checkpoint_file: str | None, calls: list[Call], tasks: list[TaskSummary],
                *, task: str | None, since: str | None, until: str | None) -> dict[str, Any]:
    against = checked_against(log, checkpoint_file)
    size = against["size"] if against else 0
    return {
        "report": {"scope": _scope(task, since, until), "task": task, "since": since, "until": until,
                   "generated": _now(), "generator": f"aecl {__version__}"},
        "verification": verification(log, checkpoint_file),
        "tasks": [t.to_json() for t in tasks],
        "calls": [{**c.to_json(), "covered_by_checkpoint": c.first.seq < size} for c in calls],
    }


CSV_COLUMNS = ["seq", "file", "line", "timestamp", "task_id", "agent_id", "mode", "rpc", "tool", "args",
               "triggering_input", "untrusted_input_source", "kind", "outcome", "gate", "rule", "reason",
               "risk_score", "risk_flags", "shadow", "enforced", "approval", "execution", "event_id",
               "decision_id", "hitl_approval_id", "policy_applied", "covered_by_checkpoint", "verification",
               "checked_against"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else (compact(value) if isinstance(value, (dict, list)) else str(value))
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text  # never a formula in a spreadsheet
    return text


def report_csv(doc: dict[str, Any]) -> str:
    v = doc["verification"]
    a = v["checked_against"]
    against = (f"{a['source']}{' ' + a['file'] if a['file'] else ''}: origin {a['origin']}, size {a['size']}, "
               f"root {a['root']}") if a else "no checkpoint"
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in doc["calls"]:
        ctx = c["context"]
        row = {**c, "triggering_input": ctx.get("triggering_input"),
               "untrusted_input_source": ctx.get("untrusted_input_source"),
               "risk_flags": ";".join(f"{k}={val}" for k, val in c["risk_flags"].items()),
               "verification": v["result"], "checked_against": against}
        w.writerow([_cell(row.get(col)) for col in CSV_COLUMNS])
    return out.getvalue()


CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; background: #eef1f5; color: #1c2430;
  font: 14px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 0; color: #4a5566; }
section { background: #ffffff; border: 1px solid #d3d9e2; border-radius: 6px; margin: 18px 0; padding: 14px 18px; }
section h2 { margin: 0 0 10px; font-size: 17px; }
.verified { border-left: 8px solid #1d7f3e; }
.verified h2 { color: #1d7f3e; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dt { font-weight: 600; color: #4a5566; }
dd { margin: 0; overflow-wrap: anywhere; }
.note { color: #6b4e00; background: #fff6d6; padding: 6px 10px; border-radius: 4px; margin: 10px 0 0; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; }
th, td { text-align: left; vertical-align: top; border-top: 1px solid #e2e6ec; padding: 6px 8px;
  overflow-wrap: anywhere; }
th { background: #f4f6f9; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; color: #4a5566; }
pre { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; font: 12px/1.4 "DejaVu Sans Mono", Menlo,
  Consolas, monospace; background: #f6f8fa; padding: 4px 6px; border-radius: 3px; }
.mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
.muted { color: #6a7586; font-size: 12px; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 12px; font-weight: 600;
  background: #e4e8ee; color: #2b3646; }
.o-approve, .o-succeeded { background: #d8f0df; color: #125c2b; }
.o-block, .o-failed, .o-rejected { background: #fbdcdc; color: #8a1c1c; }
.o-escalate { background: #fdebc8; color: #7a4a00; }
.dry { background: #e3e4fb; color: #2e2f8a; }
.exec { background: #dcecf9; color: #114a7a; }
.uncovered { background: #fff8e6; }
ul { margin: 0; padding-left: 18px; }
footer { color: #6a7586; font-size: 12px; margin-top: 12px; }
col.c-seq { width: 4%; } col.c-time { width: 10%; } col.c-who { width: 11%; } col.c-call { width: 10%; }
col.c-args { width: 21%; } col.c-dec { width: 17%; } col.c-risk { width: 9%; } col.c-appr { width: 8%; }
col.c-exec { width: 10%; }
"""

_CSP_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CSP = ("default-src 'none'; style-src 'sha256-" + _CSP_HASH + "'; script-src 'none'; img-src 'none'; "
       "font-src 'none'; connect-src 'none'; media-src 'none'; object-src 'none'; frame-src 'none'; "
       "child-src 'none'; worker-src 'none'; manifest-src 'none'; base-uri 'none'; form-action 'none'")


def h(value: Any) -> str:
    """Every value from the log goes through here into the HTML."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else (compact(value) if isinstance(value, (dict, list)) else str(value))
    return html.escape(visible(text), quote=True)


def _cls(outcome: Any) -> str:
    # Class names come from a fixed set, never from the log.
    return {"approve": "o-approve", "succeeded": "o-succeeded", "block": "o-block", "failed": "o-failed",
            "rejected": "o-rejected", "escalate": "o-escalate"}.get(str(outcome), "")


def _badge(text: Any, cls: str = "") -> str:
    return f'<span class="badge {cls}">{h(text)}</span>'


def _dl(rows: list[tuple[str, Any]]) -> str:
    return "<dl>" + "".join(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>" for k, v in rows) + "</dl>"


def _call_row(c: dict[str, Any]) -> str:
    ctx = c["context"]
    mode_badge = _badge("Decide (dry run)", "dry") if c["mode"] == "dry run" else _badge(c["rpc"], "exec")
    args = html.escape(visible(json.dumps(c["args"], indent=2, sort_keys=True, ensure_ascii=False)), quote=True)
    context_bits = []
    if ctx.get("triggering_input") not in (None, ""):
        context_bits.append(f'<div class="muted">triggering input</div><pre>{h(ctx["triggering_input"])}</pre>')
    if ctx.get("untrusted_input_source"):
        context_bits.append(_badge("untrusted input source", "o-escalate"))
    other_ctx = {k: v for k, v in ctx.items() if k not in ("triggering_input", "untrusted_input_source")}
    if other_ctx:
        context_bits.append(f"<pre>{h(other_ctx)}</pre>")
    decision = [_badge(c["outcome"], _cls(c["outcome"]))]
    if c["gate"] is not None:
        decision.append(f'<div class="mono">{h(c["gate"])} / {h(c["rule"])}</div>')
    decision.append(f"<div>{h(c['reason'])}</div>")
    if c["risk_score"] is not None:
        decision.append(f'<div class="muted">risk score {h(c["risk_score"])}</div>')
    if c["shadow"]:
        decision.append(_badge("shadow" + ("" if c["enforced"] else ": not enforced"), "o-escalate"))
    decision.append(f'<div class="muted mono">policy {h(c["policy_applied"])}</div>')
    flags = "".join(f"<li>{h(k)} <span class=\"muted\">{h(v)}</span></li>" for k, v in c["risk_flags"].items())
    if c["executions"] or c["rejection"]:
        # "succeeded, exit 0, 12.5 ms, sandbox sbx_…": the outcome as a badge, the rest below it
        first, _, rest = (c["execution"] or "").partition(", ")
        outcome = c["executions"][-1]["outcome"] if c["executions"] else "rejected"
        execution = _badge(first, _cls(outcome)) + (f'<div class="muted">{h(rest)}</div>' if rest else "")
        execution += "".join(f'<div class="muted">{h(e.get("reason"))}</div>' for e in c["executions"])
    else:
        execution = f'<span class="muted">{h(c["execution"] or "")}</span>'
    covered = "" if c["covered_by_checkpoint"] else ' class="uncovered"'
    seq_note = "" if c["covered_by_checkpoint"] else '<div class="muted">after the checkpoint</div>'
    return (
        f"<tr{covered}>"
        f'<td class="mono">{h(c["seq"])}{seq_note}</td>'
        f'<td class="mono">{h(c["timestamp"])}</td>'
        f'<td><div class="mono">{h(c["task_id"])}</div><div>{h(c["agent_id"])}</div></td>'
        f'<td>{mode_badge}<div class="mono">{h(c["tool"])}</div></td>'
        f"<td><pre>{args}</pre>{''.join(context_bits)}</td>"
        f"<td>{''.join(decision)}</td>"
        f"<td><ul>{flags}</ul></td>"
        f"<td>{h(c['approval'] or '')}</td>"
        f"<td>{execution}</td>"
        "</tr>"
    )


def report_html(doc: dict[str, Any]) -> str:
    v, meta = doc["verification"], doc["report"]
    a = v["checked_against"]
    segs = f" in {plural(v['segments'], 'segment')}" if v["segments"] > 1 else ""
    rows: list[tuple[str, Any]] = [
        ("Log", v["log"]),
        ("Entries", f"{plural(v['entries'], 'entry', 'entries')}{segs}, {plural(v['checkpoints'], 'checkpoint')}"),
        ("Checks", "entry format, sequence, chain links, leaf hashes, Ed25519 signatures, the RFC 6962 tree and "
                   "every checkpoint in the log; every record read through its type"),
        ("Keys", ", ".join(v["keys"])),
        ("Tree root (all entries)", v["root"]),
    ]
    if a is not None:
        rows += [("Checked against", a["source"] + (f" {a['file']}" if a["file"] else "")),
                 ("Checkpoint origin", a["origin"]), ("Checkpoint size", plural(a["size"], "entry", "entries")),
                 ("Checkpoint root", a["root"]),
                 ("After the checkpoint", f"{plural(v['entries_after_checkpoint'], 'entry', 'entries')} (signed "
                                          "and chained, not yet covered by a signed tree head)")]
    else:
        rows.append(("Checked against", "no checkpoint"))
    task_rows = "".join(
        f'<tr><td class="mono">{h(t["task_id"])}</td><td>{h(t["agent_id"])}'
        + (f'<div class="muted">also: {h(", ".join(t["other_agents"]))}</div>' if t["other_agents"] else "")
        + f'</td><td>{h(t["goal"])}</td><td class="mono">{h(t["first"])}</td><td class="mono">{h(t["last"])}</td>'
        f'<td>{h(t["entries"])}</td><td>{h(", ".join(f"{k} {n}" for k, n in t["outcomes"].items()))}</td></tr>'
        for t in doc["tasks"])
    calls = "".join(_call_row(c) for c in doc["calls"])
    title = f"AECL audit report: {meta['scope']}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{h(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>AECL audit report</h1>
<p>{h(meta["scope"])}; generated {h(meta["generated"])} by {h(meta["generator"])}</p>
</header>
<section class="verified" id="verification">
<h2>Verification: VERIFIED</h2>
{_dl(rows)}
<p class="note">{h(v["note"])}</p>
</section>
<section id="tasks">
<h2>{h(plural(len(doc["tasks"]), "task"))}</h2>
<table>
<thead><tr><th>Task</th><th>Agent</th><th>Declared goal</th><th>First entry</th><th>Last entry</th>
<th>Entries</th><th>Outcomes</th></tr></thead>
<tbody>{task_rows}</tbody>
</table>
</section>
<section id="calls">
<h2>{h(plural(len(doc["calls"]), "call"))}</h2>
<table class="calls">
<colgroup><col class="c-seq"><col class="c-time"><col class="c-who"><col class="c-call"><col class="c-args">
<col class="c-dec"><col class="c-risk"><col class="c-appr"><col class="c-exec"></colgroup>
<thead><tr><th>Seq</th><th>Time</th><th>Task / agent</th><th>Call</th><th>Arguments and context</th>
<th>Decision (gate / rule)</th><th>Risk flags</th><th>Approval</th><th>Execution</th></tr></thead>
<tbody>{calls}</tbody>
</table>
</section>
<footer>Every value above was read from the verified log and is shown as text.
This file loads nothing and runs no script.</footer>
</body>
</html>
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
