"""`aecl verify` and `aecl audit ...`: the auditor's commands.

Everything here reads a log file and public keys; nothing needs the service.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

from enforcer.errors import AuditError, AuditUnavailable, IntegrityError, VerificationError

VERIFY_DESCRIPTION = (
    "Check every signature, chain link and checkpoint of an audit log, recomputing its RFC 6962 Merkle "
    "tree. With --checkpoint, also check the log against a checkpoint kept elsewhere: the only way to "
    "catch a log cut short or rolled back. Exit 0 when all holds; otherwise print the first bad line and "
    "exit with the code of its failure class: 10 malformed, 11 sequence, 12 chain, 13 hash, "
    "14 unknown key, 15 signature, 16 checkpoint, 17 truncated."
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("verify", help="verify an audit log", description=VERIFY_DESCRIPTION)
    v.add_argument("--log", required=True, help="the audit log (JSON lines)")
    v.add_argument("--pubkey", required=True, action="append", help="trusted public key (PEM); repeatable")
    v.add_argument("--checkpoint", help="a signed checkpoint kept outside the log (e.g. the shipped "
                                        "audit.jsonl.checkpoint of an earlier day)")
    v.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress on stderr (default: when stderr is a terminal)")
    v.set_defaults(func=cmd_verify)

    a = sub.add_parser("audit", help="inclusion proofs, consistency proofs and task timelines",
                       description="Proofs and reconstruction over an audit log, offline.")
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    p = asub.add_parser("prove", help="inclusion proof of one event against a checkpoint",
                        description="Print, as JSON, the RFC 6962 inclusion proof of the entry with this event "
                                    "id against the latest checkpoint in the log (or --checkpoint), after "
                                    "verifying the log. Anyone holding the checkpoint can check the proof.")
    p.add_argument("--log", required=True)
    p.add_argument("--pubkey", required=True, action="append")
    p.add_argument("--event", required=True, help="event id (evt_...)")
    p.add_argument("--checkpoint", help="prove against this signed checkpoint instead of the log's latest")
    p.set_defaults(func=cmd_prove)
    c = asub.add_parser("consistency", help="consistency proof between two checkpoints",
                        description="Print, as JSON, the RFC 6962 consistency proof that the tree of checkpoint "
                                    "--to extends the tree of checkpoint --from, computed from the log and "
                                    "verified against both signed checkpoints. Exit 16 when they are not "
                                    "consistent.")
    c.add_argument("--log", required=True)
    c.add_argument("--pubkey", required=True, action="append")
    c.add_argument("--from", dest="old", required=True, help="the earlier signed checkpoint file")
    c.add_argument("--to", dest="new", required=True, help="the later signed checkpoint file")
    c.set_defaults(func=cmd_consistency)
    r = asub.add_parser("replay", help="a task's full story, in order",
                        description="Print every entry of one task (start, decisions, approvals, executions, "
                                    "rejections) in log order as a timeline, or as JSON with --json.")
    r.add_argument("--log", required=True)
    r.add_argument("--task", required=True, help="task id (tsk_...)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_replay)


def _keys(paths: list[str]):
    from enforcer.audit.keys import load_public_key

    return [load_public_key(Path(p)) for p in paths]


def _read_note(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise AuditUnavailable(f"{path}: cannot read: {e.strerror}") from None


def _trusted(path: str | None, keys) -> Any:
    if path is None:
        return None
    from enforcer.audit.verify import open_trusted_checkpoint

    return open_trusted_checkpoint(_read_note(path), keys)


def cmd_verify(args: argparse.Namespace) -> int:
    from enforcer.audit.verify import EXIT_CODES, verify_log

    keys = _keys(args.pubkey)
    note = _read_note(args.checkpoint)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    started = time.perf_counter()

    def progress(n: int) -> None:
        rate = n / max(time.perf_counter() - started, 1e-9)
        print(f"\rverified {n} entries ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)

    try:
        report = verify_log(Path(args.log), keys, trusted_note=note, progress=progress if show else None)
    except VerificationError as e:
        if show:
            print(file=sys.stderr)
        print(f"FAIL {args.log}: {e}", file=sys.stderr)
        return EXIT_CODES[e.kind]
    if show:
        print(file=sys.stderr)
    elapsed = time.perf_counter() - started
    segments = f" in {report.segments} segments" if report.segments > 1 else ""
    print(f"OK {args.log}: {report.entries} entries{segments}, {report.checkpoints} checkpoints; every signature, "
          f"chain link and checkpoint verifies ({elapsed:.2f}s)")
    if report.trusted is not None:
        print(f"trusted checkpoint: the log extends it (size {report.trusted.size} of {report.entries}): "
              "nothing it covers was cut, changed or rolled back")
    else:
        print("note: without --checkpoint, a log cut short at its end still verifies; keep the shipped "
              "checkpoint file elsewhere and pass it here to rule that out")
    return 0


def _leaves_and_records(path: Path, keys) -> tuple[list[bytes], list[dict[str, Any]], Any, tuple]:
    """Verify the log, then return its leaf hashes, records, latest checkpoint
    and every key it trusts (including keys handed over by transitions)."""
    from enforcer.audit.files import iter_log_lines
    from enforcer.audit.verify import verify_log

    report = verify_log(path, keys)
    leaves, records = [], []
    for line in iter_log_lines(path):
        entry = json.loads(line)
        leaves.append(bytes.fromhex(entry["leaf_hash"]))
        records.append(entry["record"])
    return leaves, records, report.last_checkpoint, report.keys


def cmd_prove(args: argparse.Namespace) -> int:
    from enforcer.audit.merkle import inclusion_proof, verify_inclusion

    leaves, records, latest, keys = _leaves_and_records(Path(args.log), _keys(args.pubkey))
    cp = _trusted(args.checkpoint, keys) or latest
    if cp is None:
        raise AuditError(f"{args.log}: no checkpoint to prove against (the service writes one on close)")
    index = next((i for i, r in enumerate(records) if r.get("event_id") == args.event), None)
    if index is None:
        raise AuditError(f"{args.log}: no entry with event id {args.event!r}")
    if index >= cp.size:
        raise AuditError(f"entry {index} is not covered by the checkpoint (size {cp.size}); prove it later")
    proof = inclusion_proof(leaves, index, cp.size)
    verify_inclusion(leaves[index], index, cp.size, proof, cp.root)  # never print a proof that fails
    print(json.dumps({
        "event_id": args.event, "leaf_index": index, "leaf_hash": leaves[index].hex(),
        "tree_size": cp.size, "root": base64.b64encode(cp.root).decode(), "origin": cp.origin,
        "proof": [base64.b64encode(h).decode() for h in proof],
    }, indent=2))
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    from enforcer.audit.merkle import consistency_proof, root_hash, verify_consistency
    from enforcer.audit.verify import EXIT_CODES

    leaves, _, _, keys = _leaves_and_records(Path(args.log), _keys(args.pubkey))
    old, new = _trusted(args.old, keys), _trusted(args.new, keys)
    if new.size > len(leaves):
        print(f"FAIL: checkpoint --to covers {new.size} entries, the log has {len(leaves)}", file=sys.stderr)
        return EXIT_CODES["truncated"]
    proof = consistency_proof(leaves, old.size, new.size)
    try:
        if root_hash(leaves[: new.size]) != new.root:
            raise IntegrityError("the log's first entries do not have the root of checkpoint --to")
        verify_consistency(old.size, new.size, old.root, new.root, proof)
    except IntegrityError as e:
        print(f"FAIL: the checkpoints are not consistent: {e}", file=sys.stderr)
        return EXIT_CODES["checkpoint"]
    print(json.dumps({
        "old_size": old.size, "new_size": new.size,
        "old_root": base64.b64encode(old.root).decode(), "new_root": base64.b64encode(new.root).decode(),
        "proof": [base64.b64encode(h).decode() for h in proof],
    }, indent=2))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from enforcer.audit.files import iter_log_lines

    story = []
    for n, line in enumerate(iter_log_lines(Path(args.log)), start=1):
        try:
            record = json.loads(line)["record"]
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{args.log}: line {n} is not an audit entry; run `aecl verify`") from None
        if record.get("task_id") == args.task:
            story.append({"line": n, **record})
    if not story:
        raise AuditError(f"{args.log}: no entries for task {args.task!r}")
    if args.json:
        print(json.dumps(story, indent=2))
        return 0
    print(f"task {args.task}: {len(story)} entries")
    for r in story:
        what = r.get("action_name") or r.get("rpc", "")
        extra = [f"risk {r['risk_score']}" if r.get("risk_score") is not None else "",
                 f"sandbox {r['sandbox_id']}" if r.get("sandbox_id") else "",
                 f"approval {r['hitl_approval_id']}" if r.get("hitl_approval_id") else "",
                 "SHADOW" if r.get("shadow") else ""]
        print(f"{r.get('timestamp', '')}  line {r['line']:<6} {r.get('kind', ''):<10} {what:<24} "
              f"{str(r.get('outcome', '')).upper():<16} {r.get('reason', '')}"
              + "".join(f"  [{x}]" for x in extra if x))
    return 0
