"""`aecl policy ...`: test, check, replay, status and reload (build is in
policy_build_cli). test and check run OPA on any policy directory; status and
reload talk to a running service over its AdminService."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from enforcer.config import DEFAULT_CONFIG

from enforcer.connect import add_connection_options, call_admin
DEFAULT_REGO = "rego"

# -- aecl policy replay -----------------------------------------------------------


def _candidate_engine(config, rego_dir: Path, engine_name: str):
    """The candidate policy set: Rego from rego_dir, data compiled from the
    config's manifests and risk/HITL settings, exactly as the service builds it.
    With OPA, a private `opa run --server` on a free local port evaluates it: a
    candidate is never pushed into the configured (possibly live) sidecar."""
    from enforcer.policy.reload import load_policy_set

    candidate = config.model_copy(update={"policy": config.policy.model_copy(update={"rego_dir": rego_dir})})
    policy_set = load_policy_set(candidate).policy_set
    if engine_name == "embedded":
        from enforcer.policy.wasm import WasmEngine

        return WasmEngine(policy_set, opa_binary=config.policy.opa.binary)
    from enforcer.config import OpaConfig
    from enforcer.policy.opa import OpaEngine, free_port

    private = OpaConfig(host="127.0.0.1", port=free_port(), timeout_s=max(config.policy.opa.timeout_s, 5.0),
                        supervise=True, binary=config.policy.opa.binary)
    return OpaEngine(policy_set, private)


def cmd_policy_replay(args: argparse.Namespace) -> int:
    from enforcer.config import load_config
    from enforcer.errors import ConfigError, VerificationError
    from enforcer.policy.replay import read_log, render_report, replay

    log_path, rego_dir = Path(args.log), Path(args.policy)
    if not log_path.is_file():
        raise ConfigError(f"{log_path}: no such audit log")
    if args.pubkey:
        from enforcer.audit.keys import load_public_key
        from enforcer.audit.verify import verify_file

        keys = [load_public_key(Path(p)) for p in args.pubkey]
        try:
            verify_file(log_path, keys)
        except VerificationError as e:
            print(f"aecl: error: {log_path}: does not verify, not replaying it: {e}", file=sys.stderr)
            return 2
    config = load_config(Path(args.config))
    engine = _candidate_engine(config, rego_dir, args.engine or config.policy.engine)
    try:
        report = replay(read_log(log_path), engine)
    finally:
        engine.close()
    if args.json:
        doc = {"log": str(log_path), "policy": str(rego_dir), "engine": engine.name, **report.to_json()}
        print(json.dumps(doc, indent=2))
    else:
        print(f"replaying {log_path} under {rego_dir} (revision {report.candidate_revision}, "
              f"{engine.name} engine)")
        print(render_report(report, show_reworded=args.show_reworded))
    return 1 if report.changes else 0


def add_replay_parser(psub: argparse._SubParsersAction) -> None:
    r = psub.add_parser(
        "replay", help="show which past decisions a candidate policy would change",
        description="Re-evaluate the recorded policy inputs of an audit log under a candidate policy and list "
                    "every decision whose outcome would change (approve -> block, escalate -> approve, ...). "
                    "The candidate is the Rego and data files in --policy plus the data compiled from "
                    "--config's agent manifests and risk/HITL settings, as `aecl serve` builds it. An engine error under the "
                    "candidate counts as block (fail closed). Decisions that keep their outcome but change "
                    "gate or reason are counted separately. Entries logged without policy_input are skipped "
                    "and listed. A line that is not a JSON audit entry stops the replay with an error naming "
                    "the line; signatures and the chain are not checked unless --pubkey is given (that is "
                    "`aecl verify`). Exit status: 0 when no decision would change, 1 when some would, "
                    "2 on errors (unreadable log or line, bad config, policy that does not compile).",
    )
    r.add_argument("--log", required=True, help="the audit log (JSON lines) whose decisions to replay")
    r.add_argument("--policy", required=True, metavar="DIR", help="directory of the candidate Rego policy")
    r.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"service config supplying manifests and risk/HITL data (default {DEFAULT_CONFIG})")
    r.add_argument("--engine", choices=["embedded", "opa"],
                   help="engine for the candidate (default: the config's; opa runs a private local OPA)")
    r.add_argument("--pubkey", action="append",
                   help="verify the log's signatures and chain with this public key first (as `aecl verify`); "
                        "repeatable")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--show-reworded", action="store_true",
                   help="also list decisions that keep their outcome under another gate or reason")
    r.set_defaults(func=cmd_policy_replay)


# -- aecl policy test / check ------------------------------------------------------


def _opa(explicit: str | None) -> str:
    from enforcer.policy.opa import find_opa_binary

    return find_opa_binary(explicit)


def _policy_dir(value: str) -> Path:
    from enforcer.errors import ConfigError

    path = Path(value)
    if not path.is_dir():
        raise ConfigError(f"{path}: policy directory does not exist")
    return path


def cmd_policy_test(args: argparse.Namespace) -> int:
    opa = _opa(args.opa)
    rego = _policy_dir(args.rego)
    cmd = [opa, "test", "--ignore", "capabilities.json", str(rego), "-v" if args.verbose else "--format=pretty"]
    if args.coverage:
        cmd = [opa, "test", "--ignore", "capabilities.json", str(rego), "--coverage", "--threshold",
               str(args.threshold)]
    return subprocess.call(cmd)


def add_test_parser(psub: argparse._SubParsersAction) -> None:
    t = psub.add_parser("test", help="run the Rego unit tests with OPA",
                        description="Run the Rego unit tests of a policy directory with `opa test` (the tests of "
                                    "the policy the embedded engine enforces: OPA compiles that policy to "
                                    "WebAssembly). Exit 0 when every test passes.")
    t.add_argument("--rego", default=DEFAULT_REGO, help=f"policy directory (default {DEFAULT_REGO})")
    t.add_argument("--coverage", action="store_true", help="report coverage and enforce --threshold")
    t.add_argument("--threshold", type=float, default=95.0, help="minimum coverage percent (default 95)")
    t.add_argument("--opa", help="path to the opa binary (default: $OPA_BIN, PATH, .cache/opa/bin/opa)")
    t.add_argument("--verbose", action="store_true", help="list every test")
    t.set_defaults(func=cmd_policy_test)


def shipped_capabilities() -> Path | None:
    """rego/capabilities.json of the source checkout this package runs from."""
    path = Path(__file__).resolve().parents[1] / "rego" / "capabilities.json"
    return path if path.is_file() else None


def policy_coverage(report: dict) -> tuple[float, list[str]]:
    """Line coverage of the policy files (test files excluded) in OPA's
    coverage JSON, and one line per file below 100%."""
    covered = not_covered = 0
    rows = []
    for name, f in sorted(report.get("files", {}).items()):
        if name.endswith("_test.rego"):
            continue
        c = sum(r["end"]["row"] - r["start"]["row"] + 1 for r in f.get("covered", []))
        n = sum(r["end"]["row"] - r["start"]["row"] + 1 for r in f.get("not_covered", []))
        covered, not_covered = covered + c, not_covered + n
        if n:
            rows.append(f"{100.0 * c / (c + n):6.2f}%  {name} (uncovered lines "
                        f"{[r['start']['row'] for r in f.get('not_covered', [])]})")
    total = 100.0 * covered / (covered + not_covered) if covered + not_covered else 100.0
    return total, rows


def cmd_policy_check(args: argparse.Namespace) -> int:
    from enforcer.errors import ConfigError

    opa = _opa(args.opa)
    rego = _policy_dir(args.dir)
    caps = Path(args.capabilities) if args.capabilities else (
        rego / "capabilities.json" if (rego / "capabilities.json").is_file() else shipped_capabilities())
    if caps is None or not caps.is_file():
        raise ConfigError(f"no capabilities file: {caps or 'rego/capabilities.json'} does not exist; "
                          "pass --capabilities FILE")
    failed = []

    def step(cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True)

    fmt = step([opa, "fmt", "--list", "--fail", str(rego)])
    if fmt.returncode != 0:
        files = [ln for ln in fmt.stdout.splitlines() if ln.strip()]
        print(f"FAIL opa fmt: {len(files)} file(s) need `opa fmt -w`:" if files else "FAIL opa fmt:")
        for f in files:
            print(f"  {f}")
        if not files and fmt.stderr.strip():
            print("  " + fmt.stderr.strip().replace("\n", "\n  "))
        failed.append("fmt")
    else:
        print("ok   opa fmt")
    check = step([opa, "check", "--strict", "--capabilities", str(caps), str(rego)])
    if check.returncode != 0:
        print(f"FAIL opa check --strict --capabilities {caps}:")
        print("  " + (check.stderr or check.stdout).strip().replace("\n", "\n  "))
        failed.append("check")
    else:
        print(f"ok   opa check --strict --capabilities {caps}")
    test_cmd = [opa, "test", "--ignore", "capabilities.json", str(rego)]
    test = step(test_cmd + ["-v"] if args.verbose else test_cmd)
    summary = [ln for ln in test.stdout.splitlines() if ln.startswith(("PASS:", "FAIL:", "ERROR:"))]
    if test.returncode != 0:
        print("FAIL opa test:")
        print("  " + (test.stdout + test.stderr).strip().replace("\n", "\n  "))
        failed.append("test")
    else:
        print(f"ok   opa test ({summary[-1] if summary else 'no summary'})")
        if args.verbose:
            print("  " + test.stdout.strip().replace("\n", "\n  "))
    if args.coverage is not None and "test" not in failed:
        cov = step(test_cmd + ["--coverage"])
        try:
            total, rows = policy_coverage(json.loads(cov.stdout))
        except (ValueError, KeyError, TypeError):
            total, rows = -1.0, [cov.stderr.strip()]
        if total < args.coverage:
            print(f"FAIL coverage of the policy files (tests excluded): {total:.2f}% is below {args.coverage:g}%")
            for row in rows:
                print(f"  {row}")
            failed.append("coverage")
        else:
            print(f"ok   coverage of the policy files (tests excluded): {total:.2f}%")
    print(f"{rego}: " + ("all checks passed" if not failed else "failed: " + ", ".join(failed)))
    return 1 if failed else 0


def add_check_parser(psub: argparse._SubParsersAction) -> None:
    c = psub.add_parser(
        "check", help="opa fmt, opa check --strict and opa test on a policy directory",
        description="Check a policy directory as `make rego-check` checks rego/: `opa fmt` (list the files "
                    "that need formatting), `opa check --strict` with the capabilities file (only the "
                    "allowed built-ins: no network, no clock), and `opa test`; with --coverage, also the "
                    "line coverage of the policy files, tests excluded. Runs every step and reports each. "
                    "Exit 0 when all pass, 1 when one fails, 2 on errors (no opa binary, no directory).",
    )
    c.add_argument("dir", nargs="?", default=DEFAULT_REGO, metavar="DIR",
                   help=f"policy directory (default {DEFAULT_REGO})")
    c.add_argument("--capabilities", metavar="FILE",
                   help="OPA capabilities file (default: DIR/capabilities.json if present, else the "
                        "repository's rego/capabilities.json)")
    c.add_argument("--coverage", type=float, metavar="PERCENT",
                   help="also require this line coverage of the policy files, e.g. 95")
    c.add_argument("--opa", help="path to the opa binary (default: $OPA_BIN, PATH, .cache/opa/bin/opa)")
    c.add_argument("--verbose", action="store_true", help="list every test")
    c.set_defaults(func=cmd_policy_check)


# -- aecl policy status / reload (AdminService) -----------------------------------------


def _reload_doc(r) -> dict:
    return {"applied": r.applied, "old_revision": r.old_revision, "new_revision": r.new_revision,
            "message": r.message}


def _rejected(r) -> bool:
    return not r.applied and r.message != "policy unchanged"


def cmd_policy_status(args: argparse.Namespace) -> int:
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

    s = call_admin(args, "GetPolicyStatus", pb.GetPolicyStatusRequest())
    has_reload = s.HasField("last_reload")
    at = s.last_reload_at.ToDatetime().isoformat() + "Z" if s.HasField("last_reload_at") else None
    if args.json:
        doc = {"address": args.address, "policy_revision": s.policy_revision, "engine": s.engine,
               "shadow_all": s.shadow_all, "shadow_agents": list(s.shadow_agents),
               "last_reload": ({**_reload_doc(s.last_reload), "at": at} if has_reload else None)}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"service   {args.address}")
    print(f"revision  {s.policy_revision}")
    print(f"engine    {s.engine}")
    shadow = "every agent" if s.shadow_all else (", ".join(s.shadow_agents) or "none")
    print(f"shadow    {shadow}")
    if has_reload:
        r = s.last_reload
        outcome = "applied" if r.applied else "rejected" if _rejected(r) else "unchanged"
        print(f"reload    {outcome} at {at}: {r.message}")
    else:
        print("reload    none since start-up")
    return 0


def cmd_policy_reload(args: argparse.Namespace) -> int:
    from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

    r = call_admin(args, "ReloadPolicy", pb.ReloadPolicyRequest())
    if args.json:
        print(json.dumps({"address": args.address, **_reload_doc(r), "rejected": _rejected(r)}, indent=2))
    else:
        word = "applied" if r.applied else "REJECTED" if _rejected(r) else "unchanged"
        print(f"{word}: {r.message}")
        print(f"revision  {r.new_revision}" + (f" (was {r.old_revision})" if r.applied else ""))
    return 1 if _rejected(r) else 0


def _add_admin_options(p: argparse.ArgumentParser) -> None:
    add_connection_options(p)
    p.add_argument("--json", action="store_true", help="print the answer as JSON")


def add_admin_parsers(psub: argparse._SubParsersAction) -> None:
    s = psub.add_parser(
        "status", help="show the policy a running service enforces",
        description="Ask a running `aecl serve` (AdminService/GetPolicyStatus) which policy revision it "
                    "enforces, with which engine, which agents run in shadow mode, and how its last reload "
                    "went. Exit 0 on an answer, 2 when nothing answers at --address.",
    )
    _add_admin_options(s)
    s.set_defaults(func=cmd_policy_status)
    r = psub.add_parser(
        "reload", help="make a running service reload its policy now",
        description="Ask a running `aecl serve` (AdminService/ReloadPolicy) to load, test and compile the "
                    "policy, manifests and registry on disk and swap them in. A candidate that fails never "
                    "replaces the running policy; the answer says why. Exit 0 when the reload was applied "
                    "or nothing changed, 1 when it was rejected, 2 when nothing answers at --address.",
    )
    _add_admin_options(r)
    r.set_defaults(func=cmd_policy_reload)


def add_policy_parsers(psub: argparse._SubParsersAction) -> None:
    """Every `aecl policy` subcommand."""
    from enforcer.policy_build_cli import add_build_parser

    add_test_parser(psub)
    add_check_parser(psub)
    add_replay_parser(psub)
    add_build_parser(psub)
    add_admin_parsers(psub)
