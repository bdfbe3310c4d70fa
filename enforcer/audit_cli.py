"""`aecl verify` and `aecl audit ...`: the auditor's commands.

Everything here reads a log file and public keys; nothing needs the service.
Every command that reads the log for an auditor (prove, consistency, replay,
tasks, report) verifies the whole log first, exactly as `aecl verify` does,
and reads it through the record types (enforcer.audit.verified); a log that
does not verify is refused with the verifier's exit code, and an empty or
missing one with EXIT_NOTHING_VERIFIED.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enforcer.errors import AuditError, AuditUnavailable, IntegrityError, VerificationError

EXIT_CODE_TEXT = ("10 malformed, 11 sequence, 12 chain, 13 hash, 14 unknown key, 15 signature, 16 checkpoint "
                  "(also a --checkpoint that is forged: its signature is checked before it is compared with the "
                  "log), 17 truncated; 18 nothing verified (the log is empty or does not exist)")
VERIFY_DESCRIPTION = (
    "Check every signature, chain link and checkpoint of an audit log and of its sealed segments "
    "(LOG.seg-*), recomputing its RFC 6962 Merkle tree. With --checkpoint, also check the log against a "
    "checkpoint kept elsewhere: the only way to catch a log cut short or rolled back. Exit 0 when all holds; "
    "otherwise print the first bad line and exit with the code of its failure class: " + EXIT_CODE_TEXT + "."
)
REFUSAL = ("The log is verified first, exactly as `aecl verify` does, and read through the record types; one "
           "that does not verify is refused with the exit code `aecl verify` gives it (10-17; 18 when the log is "
           "empty or missing).")
LOG_HELP = "the audit log (JSON lines); its sealed segments LOG.seg-* are read too"
PUBKEY_HELP = "trusted public key (PEM); repeatable (pass the old and new keys across a rotation)"
CHECKPOINT_HELP = ("a signed checkpoint kept outside the log (e.g. the shipped audit.jsonl.checkpoint of an "
                   "earlier day); the log must extend it")
# What a command returns when its reader closed the pipe (`| head`): the
# status of a tool killed by SIGPIPE, without a traceback.
EXIT_BROKEN_PIPE = 141


def _log_options(p: argparse.ArgumentParser, *, checkpoint_help: str | None = CHECKPOINT_HELP) -> None:
    p.add_argument("--log", required=True, help=LOG_HELP)
    p.add_argument("--pubkey", required=True, action="append", help=PUBKEY_HELP)
    if checkpoint_help is not None:
        p.add_argument("--checkpoint", help=checkpoint_help)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("verify", help="verify an audit log", description=VERIFY_DESCRIPTION)
    _log_options(v)
    v.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress on stderr (default: when stderr is a terminal)")
    v.set_defaults(func=_command(cmd_verify))

    a = sub.add_parser("audit", help="proofs, task timelines and reports over a verified log",
                       description="Proofs, task timelines and reports over an audit log, offline. " + REFUSAL)
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")

    p = asub.add_parser("prove", help="inclusion proof of one event against a checkpoint",
                        description="Print, as JSON, the RFC 6962 inclusion proof of the entry with this event "
                                    "id against the latest checkpoint in the log (or --checkpoint), after "
                                    "verifying the log. Every hash is hex. The proof carries the entry's line, "
                                    "so `aecl audit verify-proof` (or any RFC 6962 library) can check it "
                                    "against the signed checkpoint alone. " + REFUSAL)
    _log_options(p, checkpoint_help="prove against this signed checkpoint (the log must extend it) instead of "
                                    "the log's latest")
    p.add_argument("--event", required=True, help="event id (evt_...)")
    p.set_defaults(func=_command(cmd_prove))

    vp = asub.add_parser("verify-proof", help="check an inclusion proof printed by `prove`",
                         description="Check an inclusion proof printed by `aecl audit prove` against a signed "
                                     "checkpoint file, without the log: the checkpoint's signature, that the "
                                     "proof is for that checkpoint's tree (origin, size, root), that its entry "
                                     "hashes to its leaf hash and names its event id and index, and the RFC "
                                     "6962 audit path. Exit 0 when it verifies, 16 when the checkpoint does "
                                     "not (forged, or not signed by --pubkey), 19 when the proof does not, 2 "
                                     "when a file cannot be read.")
    vp.add_argument("--proof", required=True, help="the proof (JSON, as `prove` prints it); - for stdin")
    vp.add_argument("--checkpoint", required=True, help="the signed checkpoint the proof claims to be against")
    vp.add_argument("--pubkey", required=True, action="append",
                    help="public key (PEM) that signed the checkpoint; repeatable")
    vp.set_defaults(func=_command(cmd_verify_proof))

    c = asub.add_parser("consistency", help="consistency proof between two checkpoints",
                        description="Print, as JSON (hex hashes), the RFC 6962 consistency proof that the tree "
                                    "of checkpoint --to extends the tree of checkpoint --from, computed from the "
                                    "log and verified against both signed checkpoints. The log is verified "
                                    "against --to first. Exit 16 when they are not consistent. " + REFUSAL)
    _log_options(c, checkpoint_help=None)
    c.add_argument("--from", dest="old", required=True, help="the earlier signed checkpoint file")
    c.add_argument("--to", dest="new", required=True, help="the later signed checkpoint file")
    c.set_defaults(func=_command(cmd_consistency))

    r = asub.add_parser("replay", help="a task's full story, in order",
                        description="Print every entry of one task (start, decisions, executions, rejections) "
                                    "in log order as a timeline: time, seq, kind, Decide dry run or Execute, "
                                    "agent, tool and arguments, outcome, gate/rule, reason, risk, approval and "
                                    "sandbox; or as JSON with --json. " + REFUSAL)
    _log_options(r)
    r.add_argument("--task", required=True, help="task id (tsk_...)")
    r.add_argument("--json", action="store_true", help="print the entries as JSON records instead")
    r.set_defaults(func=_command(cmd_replay))

    t = asub.add_parser("tasks", help="list the log's tasks",
                        description="List every task of the log: its agent, the time of its first and last "
                                    "entry, its number of entries and its counts per outcome (decisions, dry "
                                    "runs, executions, rejections). " + REFUSAL)
    _log_options(t)
    t.add_argument("--json", action="store_true", help="print the list as JSON")
    t.set_defaults(func=_command(cmd_tasks))

    rep = asub.add_parser("report", help="a verified report of a task or a time range (HTML, CSV, JSON)",
                          description="Write a report of one task (--task) and/or a time range (--since, "
                                      "--until; default: the whole log): every call with its arguments and "
                                      "context, Decide dry run or Execute, decision, gate and rule, risk flags, "
                                      "approval and execution outcome, and the verification result with the "
                                      "checkpoint it was checked against. HTML (default) is one self-contained "
                                      "file: every value escaped, CSS embedded, no script, nothing loaded, a "
                                      "strict Content-Security-Policy. CSV cells that would start a formula are "
                                      "prefixed with '. " + REFUSAL)
    _log_options(rep)
    rep.add_argument("--task", help="only this task (tsk_...)")
    rep.add_argument("--since", help="only calls at or after this time (ISO 8601, UTC unless it says otherwise)")
    rep.add_argument("--until", help="only calls before this time (ISO 8601, UTC unless it says otherwise)")
    rep.add_argument("--format", choices=("html", "csv", "json"), default="html",
                     help="output format (default html)")
    rep.add_argument("--out", help="write the report to this file (mode 0600) instead of stdout")
    rep.set_defaults(func=_command(cmd_report))


# ----------------------------------------------------------------- plumbing


def _command(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Refusals with the verifier's exit codes, and a quiet exit when the
    reader of stdout goes away (`aecl audit replay | head`)."""
    from enforcer.audit.verify import EXIT_CODES, EXIT_NOTHING_VERIFIED, NothingVerified

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            try:
                code = func(args)
            except NothingVerified as e:
                print(f"NOTHING VERIFIED {e}", file=sys.stderr)
                return EXIT_NOTHING_VERIFIED
            except VerificationError as e:
                print(f"FAIL {args.log}: {e}", file=sys.stderr)
                if func is not cmd_verify:
                    print(f"aecl audit {args.audit_command}: refusing to read a log that does not verify "
                          f"(exit {EXIT_CODES[e.kind]}, as `aecl verify` gives)", file=sys.stderr)
                return EXIT_CODES[e.kind]
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            # Point stdout at /dev/null so the interpreter's last flush is quiet too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_BROKEN_PIPE

    return run


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one}" if n == 1 else f"{n} {many or one + 's'}"


def _keys(paths: list[str]):
    from enforcer.audit.keys import load_public_key

    return [load_public_key(Path(p)) for p in paths]


def _read_file(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as e:
        raise AuditUnavailable(f"{path}: cannot read: {e.strerror}") from None


def _read_note(path: str | None) -> bytes | None:
    return None if path is None else _read_file(path)


def _verified(args: argparse.Namespace, *, trusted: bytes | None = None, keys=None):
    from enforcer.audit.verified import read_verified

    note = trusted if trusted is not None else _read_note(getattr(args, "checkpoint", None))
    return read_verified(Path(args.log), keys if keys is not None else _keys(args.pubkey), trusted_note=note)


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False))


# ------------------------------------------------------------------- verify


def cmd_verify(args: argparse.Namespace) -> int:
    from enforcer.audit.verified import log_exists
    from enforcer.audit.verify import NothingVerified, verify_log

    keys = _keys(args.pubkey)
    note = _read_note(args.checkpoint)
    path = Path(args.log)
    if not log_exists(path):
        raise NothingVerified(f"{args.log}: no such log (no file and no segments): nothing was verified")
    show = sys.stderr.isatty() if args.progress is None else args.progress
    started = time.perf_counter()

    def progress(n: int) -> None:
        rate = n / max(time.perf_counter() - started, 1e-9)
        print(f"\rverified {_plural(n, 'entry', 'entries')} ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)

    try:
        report = verify_log(path, keys, trusted_note=note, progress=progress if show else None)
    finally:
        if show:
            print(file=sys.stderr)
    if report.entries == 0:
        raise NothingVerified(f"{args.log}: the log is empty: nothing was verified")
    elapsed = time.perf_counter() - started
    segments = f" in {_plural(report.segments, 'segment')}" if report.segments > 1 else ""
    print(f"OK {args.log}: {_plural(report.entries, 'entry', 'entries')}{segments}, "
          f"{_plural(report.checkpoints, 'checkpoint')}; every signature, chain link and checkpoint verifies "
          f"({elapsed:.2f}s)")
    if report.trusted is not None:
        print(f"trusted checkpoint: the log extends it (size {report.trusted.size} of "
              f"{_plural(report.entries, 'entry', 'entries')}): nothing it covers was cut, changed or rolled back")
    else:
        print("note: without --checkpoint, a log cut short at its end still verifies; keep the shipped "
              "checkpoint file elsewhere and pass it here to rule that out")
    return 0


# ------------------------------------------------------------------- proofs


def cmd_prove(args: argparse.Namespace) -> int:
    from enforcer.audit.merkle import inclusion_proof, verify_inclusion

    log = _verified(args)
    cp = log.report.trusted or log.report.last_checkpoint
    if cp is None:
        raise AuditError(f"{args.log}: no checkpoint to prove against (the service writes one on close)")
    entry = next((e for e in log.entries if e.record.event_id == args.event), None)
    if entry is None:
        raise AuditError(f"{args.log}: no entry with event id {args.event!r}")
    if entry.seq >= cp.size:
        raise AuditError(f"entry {entry.seq} is not covered by the checkpoint (size {cp.size}); prove it later")
    leaves = log.leaves()
    proof = inclusion_proof(leaves, entry.seq, cp.size)
    verify_inclusion(leaves[entry.seq], entry.seq, cp.size, proof, cp.root)  # never print a proof that fails
    _print_json({
        "event_id": args.event, "leaf_index": entry.seq, "leaf_hash": entry.leaf_hash.hex(),
        "tree_size": cp.size, "root": cp.root.hex(), "origin": cp.origin,
        "proof": [h.hex() for h in proof],
        "entry": entry.raw.decode(),
    })
    return 0


class _BadProof(Exception):
    pass


def _hex32(doc: dict[str, Any], name: str) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str) or len(value) != 64:
        raise _BadProof(f"{name} must be 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _BadProof(f"{name} must be 64 hex digits") from None


def _count(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if type(value) is not int or value < 0:
        raise _BadProof(f"{name} must be a non-negative integer")
    return value


def _check_proof(doc: Any, cp) -> tuple[int, str]:
    """Raises _BadProof unless the proof shows its entry in the checkpoint's tree."""
    from enforcer.audit.entry import leaf_hash, split_line
    from enforcer.audit.merkle import verify_inclusion

    if not isinstance(doc, dict):
        raise _BadProof("not a JSON object")
    index, size = _count(doc, "leaf_index"), _count(doc, "tree_size")
    leaf, root = _hex32(doc, "leaf_hash"), _hex32(doc, "root")
    path = doc.get("proof")
    if not isinstance(path, list):
        raise _BadProof("proof must be a list of hashes")
    hashes = [_hex32({"proof hash": h}, "proof hash") for h in path]
    origin = doc.get("origin")
    if origin is not None and origin != cp.origin:
        raise _BadProof(f"the proof is for log {origin!r}, the checkpoint for {cp.origin!r}")
    if size != cp.size:
        raise _BadProof(f"the proof is for a tree of {_plural(size, 'entry', 'entries')}, the checkpoint covers "
                        f"{cp.size}: it was made against another checkpoint")
    if root != cp.root:
        raise _BadProof("the proof's root is not the checkpoint's root: it was made against another checkpoint")
    event = doc.get("event_id", "")
    if "entry" in doc:
        line = doc["entry"].encode() if isinstance(doc["entry"], str) else b""
        parts = split_line(line)
        if parts is None or leaf_hash(parts[0]) != leaf:
            raise _BadProof("the entry does not hash to the proof's leaf_hash")
        try:
            body = json.loads(parts[0])
        except ValueError:
            raise _BadProof("the entry is not JSON") from None
        if body.get("seq") != index:
            raise _BadProof(f"the entry is entry {body.get('seq')!r}, the proof says {index}")
        if not isinstance(body.get("record"), dict) or body["record"].get("event_id") != event:
            raise _BadProof(f"the entry is not event {event!r}")
    try:
        verify_inclusion(leaf, index, size, hashes, cp.root)
    except IntegrityError as e:
        raise _BadProof(f"the audit path does not lead to the checkpoint's root: {e}") from None
    return index, str(event)


def cmd_verify_proof(args: argparse.Namespace) -> int:
    from enforcer.audit.verify import EXIT_CODES, EXIT_PROOF, TrustedCheckpointError, open_trusted_checkpoint

    raw = _read_file(args.proof)
    note = _read_file(args.checkpoint)
    try:
        cp = open_trusted_checkpoint(note, _keys(args.pubkey))
    except TrustedCheckpointError as e:
        print(f"FAIL {args.checkpoint}: {e}", file=sys.stderr)
        return EXIT_CODES[e.kind]
    try:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise _BadProof(f"not JSON: {e}") from None
        index, event = _check_proof(doc, cp)
    except _BadProof as e:
        print(f"FAIL {args.proof}: the proof does not verify: {e}", file=sys.stderr)
        return EXIT_PROOF
    print(f"OK: event {json.dumps(event)} is entry {index} of the tree of checkpoint {cp.origin} "
          f"(size {cp.size}, root {cp.root.hex()})")
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    from enforcer.audit.merkle import consistency_proof, root_hash, verify_consistency
    from enforcer.audit.verify import EXIT_CODES, open_trusted_checkpoint

    new_note, old_note = _read_file(args.new), _read_file(args.old)
    log = _verified(args, trusted=new_note)  # the log extends --to, or is refused
    new = log.report.trusted
    old = open_trusted_checkpoint(old_note, log.report.keys)  # forged: refused before any comparison
    if old.size > new.size:
        raise AuditError(f"checkpoint --from covers {old.size} entries, --to only {new.size}: pass the earlier "
                         "one as --from")
    leaves = log.leaves()
    proof = consistency_proof(leaves, old.size, new.size)
    try:
        if old.origin != new.origin:
            raise IntegrityError(f"--from is a checkpoint of log {old.origin!r}, --to of {new.origin!r}")
        if root_hash(leaves[: new.size]) != new.root:
            raise IntegrityError("the log's first entries do not have the root of checkpoint --to")
        verify_consistency(old.size, new.size, old.root, new.root, proof)
    except IntegrityError as e:
        print(f"FAIL: the checkpoints are not consistent: {e}", file=sys.stderr)
        return EXIT_CODES["checkpoint"]
    _print_json({
        "old_size": old.size, "new_size": new.size, "old_root": old.root.hex(), "new_root": new.root.hex(),
        "origin": new.origin, "proof": [h.hex() for h in proof],
    })
    return 0


# --------------------------------------------------------- stories, reports


def cmd_replay(args: argparse.Namespace) -> int:
    from enforcer.audit.report import oneline, timeline_line, verification_line
    from enforcer.audit.story import mode, select, summarise_tasks

    log = _verified(args)
    story = select(log, task=args.task)
    if not story:
        raise AuditError(f"{args.log}: no entries for task {args.task!r}")
    if args.json:
        _print_json([{"seq": e.seq, "file": e.file, "line": e.line, "mode": mode(e.record), **e.record.to_dict()}
                     for e in story])
        return 0
    task = summarise_tasks(story)[0]
    print(f"task {oneline(args.task)}: {_plural(len(story), 'entry', 'entries')}, agent {oneline(task.agent_id)}"
          + (f" (also {oneline(', '.join(sorted(task.other_agents)))})" if task.other_agents else ""))
    print(verification_line(log, args.checkpoint))
    for e in story:
        print(timeline_line(e))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from enforcer.audit.report import tasks_text, verification, verification_line
    from enforcer.audit.story import summarise_tasks

    log = _verified(args)
    tasks = summarise_tasks(log.entries)
    if args.json:
        _print_json({"verification": verification(log, args.checkpoint), "tasks": [t.to_json() for t in tasks]})
        return 0
    print(f"{_plural(len(tasks), 'task')} in {args.log}")
    print(verification_line(log, args.checkpoint))
    if tasks:
        for line in tasks_text(tasks):
            print(line)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from enforcer.audit.report import report_csv, report_html, report_json
    from enforcer.audit.story import group_calls, parse_time, select, summarise_tasks

    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    if since is not None and until is not None and until <= since:
        raise AuditError(f"--until {args.until} is not after --since {args.since}")
    log = _verified(args)
    chosen = select(log, task=args.task)
    if args.task is not None and not chosen:
        raise AuditError(f"{args.log}: no entries for task {args.task!r}")
    calls = group_calls(chosen)
    if since is not None or until is not None:
        in_range = {e.seq for e in select(log, task=args.task, since=since, until=until)}
        calls = [c for c in calls if c.first.seq in in_range]
        chosen = [e for e in chosen if e.seq in in_range]
    doc = report_json(log, args.checkpoint, calls, summarise_tasks(chosen), task=args.task, since=args.since,
                      until=args.until)
    text = {"html": report_html, "csv": report_csv, "json": lambda d: json.dumps(d, indent=2,
                                                                                  ensure_ascii=False) + "\n"}[
        args.format](doc)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise AuditUnavailable(f"{args.out}: cannot write: {e.strerror}") from None
    print(f"wrote {args.out}: {args.format}, {_plural(len(calls), 'call')}; the log verifies "
          f"({_plural(log.report.entries, 'entry', 'entries')})", file=sys.stderr)
    return 0
