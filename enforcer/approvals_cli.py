"""`aecl approvals ...`: the approval queue from a terminal, over gRPC's
ApprovalService, as an approver (an approver API key, or an approver's
client certificate).

What the agent sent (arguments, triggering input, goal, tool output) is
untrusted: every text is printed with control and formatting characters
escaped, so a payload cannot move the cursor, clear the screen, recolour
or reorder what the approver reads, or forge a line of this output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from enforcer.connect import add_connection_options, key_env, role_key

APPROVER_KEY_ENV = key_env("approver")

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_CODES_HELP = (
    "exit codes: 0 done; 1 refused or failed (FAILED_PRECONDITION: resolved already, expired, cancelled; "
    "PERMISSION_DENIED, UNAUTHENTICATED, NOT_FOUND, ...); 2 usage (bad options, an unreadable key file, "
    "INVALID_ARGUMENT); 3 the service is unavailable (nothing answers, UNAVAILABLE, DEADLINE_EXCEEDED)."
)

STATUSES = ("pending", "approved", "rejected", "expired", "cancelled", "executing", "executed", "failed")
MAX_PAGE = 500


class _Exit(Exception):
    """Stop the command with this exit code (the message is printed already)."""

    def __init__(self, code: int) -> None:
        self.code = code


# -- text that is safe on a terminal ---------------------------------------------------

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b", "\\": "\\\\"}


def safe(text: str) -> str:
    """`text` with every control, format (bidi overrides, zero-width) and
    line/paragraph separator character escaped, and backslashes doubled so
    an escape cannot be faked. One line, always."""
    out = []
    for c in text:
        if c in _NAMED:
            out.append(_NAMED[c])
        elif unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            n = ord(c)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
        else:
            out.append(c)
    return "".join(out)


def safe_json(value: Any) -> str:
    """JSON with every non-ASCII character escaped: nothing in it reaches the terminal raw."""
    return json.dumps(value, ensure_ascii=True, sort_keys=True)


# -- protobuf -> the JSON view of an approval -------------------------------------------


def _plain(value: Any) -> Any:
    """Struct numbers are doubles; whole ones come back as integers (as the service stores them)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53 - 1:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _struct(msg: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return _plain(json_format.MessageToDict(msg))


def _seconds_of(msg: Any, parent: Any = None, name: str = "") -> float | None:
    if parent is not None and not parent.HasField(name):
        return None
    return msg.seconds + msg.nanos / 1e9


def _time(msg: Any, parent: Any = None, name: str = "") -> str | None:
    from enforcer.audit.records import timestamp

    at = _seconds_of(msg, parent, name)
    return None if at is None else timestamp(at)


def _principal(parent: Any, name: str) -> dict[str, Any] | None:
    if not parent.HasField(name):
        return None
    p = getattr(parent, name)
    return {"kind": p.kind, "id": p.id, "key_id": p.key_id or None, "cert_fingerprint": p.cert_fingerprint or None}


def _enum(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def _decision(d: Any) -> dict[str, Any]:
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

    return {"outcome": _enum(pb.Outcome.Name(d.outcome), "OUTCOME_"), "reason": d.reason,
            "risk_score": d.risk_score, "policy_revision": d.policy_revision, "decision_id": d.decision_id,
            "gate": d.gate, "rule": d.rule, "risk_flags": list(d.risk_flags), "risk_weights": dict(d.risk_weights),
            "approval_ttl_seconds": d.approval_ttl_seconds, "shadow": d.shadow}


def _result(a: Any) -> dict[str, Any] | None:
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

    if not a.HasField("result"):
        return None
    r = a.result
    return {"status": _enum(pb.ExecutionStatus.Name(r.status), "EXECUTION_STATUS_"),
            "output": _struct(r.output) if r.HasField("output") else None, "error": r.error,
            "sandbox_id": r.sandbox_id, "output_truncated": r.output_truncated,
            "decision": _decision(r.decision) if r.HasField("decision") else None, "event_id": r.event_id,
            # unix seconds, as approval_json has it
            "finished_at": _seconds_of(r.finished_at, r, "finished_at")}


def approval_doc(a: Any) -> dict[str, Any]:
    """A pb.Approval in the shape of enforcer.pipeline.approvals.approval_json
    (the webhook's and the console's view), for --json. The wire drops two
    things that view has: the principal's token_id and the result's cause.
    As there, history[].at and result.finished_at are unix seconds."""
    from google.protobuf import json_format

    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

    history = [{"tool": h.tool, "outcome": h.outcome,
                "amount": _plain(json_format.MessageToDict(h.amount)) if h.HasField("amount") else None,
                "resource": h.resource or None, "at": _seconds_of(h.at, h, "at")} for h in a.history]
    return {
        "approval_id": a.approval_id, "status": _enum(pb.ApprovalStatus.Name(a.status), "APPROVAL_STATUS_"),
        "agent_id": a.agent_id, "task_id": a.task_id, "tool": a.tool, "args": _struct(a.args),
        "args_digest": a.args_digest, "principal": _principal(a, "principal"), "reason": a.reason,
        "gate": a.gate, "rule": a.rule, "risk_score": a.risk_score, "risk_flags": list(a.risk_flags),
        "risk_weights": dict(a.risk_weights), "policy_revision": a.policy_revision,
        "decision_id": a.decision_id, "untrusted_input_source": a.untrusted_input_source,
        "triggering_input": a.triggering_input, "idempotency_key": a.idempotency_key,
        "declared_goal": a.declared_goal, "history": history, "created_at": _time(a.created_at),
        "expires_at": _time(a.expires_at), "approver": _principal(a, "approver"), "comment": a.comment,
        "resolved_at": _time(a.resolved_at, a, "resolved_at"), "result": _result(a), "version": a.version,
        "kind": a.kind or "call", "compensation_of": a.compensation_of,
    }


# -- rendering ------------------------------------------------------------------------


def _seconds(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339).timestamp()  # 3.11 reads the trailing Z


def duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def expires_in(doc: dict[str, Any], now: float) -> str:
    """For a pending approval, how long it has (on this machine's clock: the
    service's decides); '-' once resolved."""
    if doc["status"] != "pending":
        return "-"
    left = _seconds(doc["expires_at"]) - now
    return "expired" if left <= 0 else duration(left)


def table(docs: list[dict[str, Any]], now: float) -> list[str]:
    head = ("ID", "STATUS", "AGENT", "TOOL", "RISK", "EXPIRES IN")
    rows = [(d["approval_id"], d["status"], d["agent_id"], d["tool"], f"{d['risk_score']:.2f}", expires_in(d, now))
            for d in docs]
    cells = [head, *[tuple(safe(c) for c in r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]


def _who(p: dict[str, Any] | None) -> str:
    if p is None:
        return "-"
    how = f"key {p['key_id']}" if p.get("key_id") else (f"certificate {p['cert_fingerprint']}"
                                                        if p.get("cert_fingerprint") else "")
    return safe(f"{p['kind']} {p['id']}" + (f" ({how})" if how else ""))


def untrusted_block(text: str, indent: str = "    ") -> list[str]:
    """Multi-line untrusted text: each of its lines behind a bar, escaped,
    so none can pass for a line of ours."""
    if not text:
        return [f"{indent}(none)"]
    return [f"{indent}| {safe(line)}" for line in text.split("\n")]


def show(doc: dict[str, Any], now: float) -> list[str]:
    from enforcer.audit.records import timestamp

    d = doc
    when = {"pending": f"expires in {expires_in(d, now)}, at {d['expires_at']}; ",
            "approved": f"must start before {d['expires_at']}; ", "expired": f"expired at {d['expires_at']}; ",
            }.get(d["status"], "")
    lines = [f"approval {safe(d['approval_id'])}  {d['status'].upper()}  ({when}version {d['version']})", ""]

    def field(name: str, value: str) -> None:
        lines.append(f"  {name:<14}{value}")

    field("agent", safe(d["agent_id"]) + f"  (calling as {_who(d['principal'])})")
    field("task", safe(d["task_id"]))
    field("goal", safe_json(d["declared_goal"]) + "  (declared by the agent)")
    field("created", d["created_at"])
    lines.append("")
    field("tool", safe(d["tool"]))
    field("args", safe_json(d["args"]))
    field("args digest", safe(d["args_digest"]))
    if d["idempotency_key"]:
        field("idempotency", safe_json(d["idempotency_key"]))
    lines.append("")
    field("reason", safe(d["reason"]))
    field("gate / rule", f"{safe(d['gate'])} / {safe(d['rule'])}")
    field("risk score", f"{d['risk_score']:.2f}")
    weights = d["risk_weights"]
    for flag in d["risk_flags"]:
        w = weights.get(flag)
        lines.append(f"    {safe(flag):<24}{'' if w is None else f'+{w:.2f}'}")
    field("policy", f"{safe(d['policy_revision'])}  (decision {safe(d['decision_id'])})")
    lines.append("")
    flagged = ("the agent flagged its source as untrusted" if d["untrusted_input_source"]
               else "the agent did not flag its source; it is untrusted all the same")
    lines.append(f"  triggering input  UNTRUSTED, sent by the agent, shown escaped ({flagged}):")
    lines.extend(untrusted_block(d["triggering_input"]))
    lines.append("")
    history = d["history"]
    lines.append(f"  history ({len(history)} earlier call{'s' if len(history) != 1 else ''} of the task)")
    for i, h in enumerate(history, 1):
        extra = "".join(f"  {k}={safe_json(h[k])}" for k in ("amount", "resource") if h.get(k) is not None)
        at = "-" if h["at"] is None else timestamp(h["at"])
        lines.append(f"    {i:>3}. {at}  {safe(h['tool'])}  {safe(h['outcome'])}{extra}")
    lines.append("")
    if d["approver"] is not None or d["resolved_at"] is not None:
        field("approver", _who(d["approver"]) + (f"  at {d['resolved_at']}" if d["resolved_at"] else ""))
        field("comment", safe_json(d["comment"]) if d["comment"] else "-")
    else:
        field("approver", "- (not resolved)")
    r = d["result"]
    if r is not None:
        field("result", safe(r["status"]) + (f"  at {timestamp(r['finished_at'])}" if r["finished_at"] else ""))
        if r["error"]:
            field("error", safe(r["error"]))
        if r["output"] is not None:
            field("output", safe_json(r["output"]) + ("  (truncated)" if r["output_truncated"] else ""))
        if r["decision"] is not None:
            dd = r["decision"]
            field("decided again", f"{dd['outcome']} by {safe(dd['gate'])}/{safe(dd['rule'])}: {safe(dd['reason'])}")
        if r["sandbox_id"]:
            field("sandbox", safe(r["sandbox_id"]))
        if r["event_id"]:
            field("audit entry", safe(r["event_id"]))
    return lines


def watch_line(doc: dict[str, Any], now: float) -> str:
    from enforcer.audit.records import timestamp

    d = doc
    tail = f"expires in {expires_in(d, now)}" if d["status"] == "pending" else (
        f"by {_who(d['approver'])}" if d["status"] in ("approved", "rejected") else
        (safe(d["result"]["error"])[:120] if d["result"] and d["result"]["error"] else ""))
    return "  ".join(x for x in (timestamp(now), safe(d["approval_id"]), f"{d['status']:<9}", safe(d["agent_id"]),
                                  safe(d["tool"]), f"risk {d['risk_score']:.2f}", tail) if x)


# -- talking to the service -------------------------------------------------------------


def add_options(p: argparse.ArgumentParser) -> None:
    """enforcer.connect's options, with an approver's key."""
    add_connection_options(p, "approver", timeout_help="give up after this long (default 10; `watch` waits for "
                                                       "changes without limit)")


def approver_key(args: argparse.Namespace) -> str | None:
    return role_key(args, "approver")


def _fail(args: argparse.Namespace, message: str, code: int) -> _Exit:
    print(f"aecl approvals {args.approvals_command}: {message}", file=sys.stderr)
    return _Exit(code)


@contextmanager
def _service(args: argparse.Namespace) -> Iterator[tuple[Any, tuple[tuple[str, str], ...]]]:
    """An ApprovalService stub and the approver's credential; every gRPC
    error inside becomes one line on stderr and its exit code."""
    import grpc

    from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
    from enforcer.connect import channel
    from enforcer.errors import AeclError

    key = approver_key(args)
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    try:
        ch = channel(args)
    except AeclError as e:
        # connect.channel's one network failure; its others are usage (files, --cert without --key).
        raise _fail(args, str(e), EXIT_UNAVAILABLE if str(e).startswith("nothing answers") else EXIT_USAGE) \
            from None
    try:
        yield pb_grpc.ApprovalServiceStub(ch), metadata
    except grpc.RpcError as e:
        raise _rpc_failure(args, e) from None
    finally:
        ch.close()


def _rpc_failure(args: argparse.Namespace, e: Any) -> _Exit:
    import grpc

    code = e.code()
    hint = ""
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        hint = f" (an approver's key: --approver-key FILE or ${APPROVER_KEY_ENV}, or an approver's certificate)"
    elif code == grpc.StatusCode.UNIMPLEMENTED:
        hint = " (this service does not offer ApprovalService: is it an older aecl?)"
    elif code == grpc.StatusCode.UNAVAILABLE:
        hint = " (is `aecl serve` running there?)"
    exit_code = {grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
                 grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE}.get(code, EXIT_REFUSED)
    return _fail(args, f"{args.address}: {code.name}: {safe(e.details() or '')}{hint}", exit_code)


def _command(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except _Exit as e:
            return e.code
        except BrokenPipeError:  # `aecl approvals watch | head`
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_OK
    return run


# -- commands ---------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

    if args.limit < 1:
        raise _fail(args, "--limit must be at least 1", EXIT_USAGE)
    status = pb.ApprovalStatus.Value(f"APPROVAL_STATUS_{args.status.upper()}") if args.status else 0
    docs: list[dict[str, Any]] = []
    with _service(args) as (stub, metadata):
        token = ""
        while len(docs) < args.limit:
            r = stub.ListApprovals(pb.ListApprovalsRequest(
                status=status, agent_id=args.agent or "", task_id=args.task or "",
                page_size=min(args.limit - len(docs), MAX_PAGE), page_token=token),
                timeout=args.timeout, metadata=metadata)
            docs.extend(approval_doc(a) for a in r.approvals)
            token = r.next_page_token
            if not token:
                break
    docs = docs[:args.limit]
    if args.json:
        print(json.dumps(docs, indent=2, ensure_ascii=True))
        return EXIT_OK
    if not docs:
        print("no approvals" + (f" with status {args.status}" if args.status else ""))
        return EXIT_OK
    for line in table(docs, time.time()):
        print(line)
    if token:
        print(f"(the first {len(docs)}; more with --limit)")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

    with _service(args) as (stub, metadata):
        r = stub.GetApproval(pb.GetApprovalRequest(approval_id=args.id), timeout=args.timeout, metadata=metadata)
    doc = approval_doc(r.approval)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=True))
    else:
        print("\n".join(show(doc, time.time())).rstrip())
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace, approve: bool) -> int:
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

    resolution = pb.RESOLUTION_APPROVE if approve else pb.RESOLUTION_REJECT
    with _service(args) as (stub, metadata):
        r = stub.ResolveApproval(pb.ResolveApprovalRequest(approval_id=args.id, resolution=resolution,
                                                           comment=args.comment),
                                 timeout=args.timeout, metadata=metadata)
    doc = approval_doc(r.approval)
    if args.json:
        print(json.dumps({"approval": doc, "event_id": r.event_id}, indent=2, ensure_ascii=True))
        return EXIT_OK
    by = _who(doc["approver"])
    if approve:
        print(f"approval {safe(doc['approval_id'])} approved by {by} (audit entry {safe(r.event_id)}): the "
              f"service runs {safe(doc['tool'])} once, after checking it against the policy in force; follow it "
              f"with `aecl approvals show {safe(doc['approval_id'])}`")
    else:
        print(f"approval {safe(doc['approval_id'])} rejected by {by} (audit entry {safe(r.event_id)}): "
              f"{safe(doc['tool'])} will not run")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

    with _service(args) as (stub, metadata):
        # No deadline: a watch lasts until the service ends it or the user does (Ctrl-C).
        stream = stub.WatchApprovals(pb.WatchApprovalsRequest(include_pending=args.include_pending),
                                     metadata=metadata)
        try:
            for r in stream:
                doc = approval_doc(r.approval)
                print(json.dumps(doc, ensure_ascii=True) if args.json else watch_line(doc, time.time()), flush=True)
        finally:
            stream.cancel()
    return EXIT_OK


# -- the parser -------------------------------------------------------------------------


def add_approvals_parser(sub: argparse._SubParsersAction) -> None:
    ap = sub.add_parser("approvals", help="list, inspect, approve and reject escalated calls",
                        description="The approval queue of a running service, as an approver (--approver-key, "
                                    "or an approver's client certificate). Approving runs the call once, on the "
                                    "service, after the policy in force is evaluated again; every resolution is "
                                    "an audit entry.", epilog=EXIT_CODES_HELP)
    asub = ap.add_subparsers(dest="approvals_command", required=True, metavar="COMMAND")

    ls = asub.add_parser("list", help="approvals, newest first, as a table",
                         description="List approvals, newest first: id, status, agent, tool, risk score, and "
                                     "for pending ones the time left (by this machine's clock; the service's "
                                     "clock decides).", epilog=EXIT_CODES_HELP)
    ls.add_argument("--status", choices=STATUSES, help="only approvals in this status")
    ls.add_argument("--agent", metavar="AGENT", help="only this agent's approvals")
    ls.add_argument("--task", metavar="TASK", help="only this task's approvals")
    ls.add_argument("--limit", type=int, default=50, metavar="N", help="at most N approvals (default 50)")
    ls.add_argument("--json", action="store_true", help="print a JSON array (the webhook's approval view)")
    add_options(ls)
    ls.set_defaults(func=_command(cmd_list))

    sh = asub.add_parser("show", help="one approval with everything a human needs to decide",
                         description="Show one approval: the exact call (tool, arguments, digest), why it "
                                     "escalated (reason, gate, rule, risk score and flags with their weights), "
                                     "the agent's triggering input (UNTRUSTED, escaped), the task's earlier "
                                     "calls, and once resolved the approver, comment and result.",
                         epilog=EXIT_CODES_HELP)
    sh.add_argument("id", metavar="ID", help="the approval id (apr_...)")
    sh.add_argument("--json", action="store_true", help="print it as JSON (the webhook's approval view)")
    add_options(sh)
    sh.set_defaults(func=_command(cmd_show))

    for name, approve in (("approve", True), ("reject", False)):
        verb = "approve" if approve else "reject"
        what = ("The service then runs the call once, after evaluating the policy in force again (a block now "
                "wins)." if approve else "The call does not run; the agent's WaitForExecution sees the rejection.")
        r = asub.add_parser(name, help=f"{verb} a pending approval",
                            description=f"{verb.capitalize()} a pending approval as the approver of the "
                                        f"credential. {what} An approval resolved already, expired or cancelled "
                                        "is refused (FAILED_PRECONDITION, exit 1); so is an approver who also "
                                        "runs the task's agent.", epilog=EXIT_CODES_HELP)
        r.add_argument("id", metavar="ID", help="the approval id (apr_...)")
        r.add_argument("--comment", default="", metavar="TEXT",
                       help="why (kept with the approval and its audit entry; at most 1024 bytes)")
        r.add_argument("--json", action="store_true", help="print the resolved approval and audit entry id as JSON")
        add_options(r)
        r.set_defaults(func=_command(lambda args, approve=approve: cmd_resolve(args, approve)))

    w = asub.add_parser("watch", help="print each approval change as it happens",
                        description="Stream every approval change (created, resolved, expired, cancelled, "
                                    "executing, executed, failed) as the service commits it, one line each, "
                                    "until interrupted (Ctrl-C) or the service ends the stream.",
                        epilog=EXIT_CODES_HELP)
    w.add_argument("--include-pending", action="store_true", help="first print every pending approval")
    w.add_argument("--json", action="store_true", help="one JSON object per line (the webhook's approval view)")
    add_options(w)
    w.set_defaults(func=_command(cmd_watch))


__all__ = ["EXIT_REFUSED", "EXIT_UNAVAILABLE", "EXIT_USAGE", "add_approvals_parser", "approval_doc", "safe",
           "show", "table"]
