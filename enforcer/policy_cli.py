"""`aecl policy replay` and the embedded-engine half of `aecl policy test`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from enforcer.config import DEFAULT_CONFIG
ENGINES = ("opa", "embedded", "both")

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
        from enforcer.policy.embedded import EmbeddedEngine

        return EmbeddedEngine(policy_set)
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
                    "The candidate is the Rego in --policy plus the data compiled from --config's agent "
                    "manifests and risk/HITL settings, as `aecl serve` builds it. An engine error under the "
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


# -- aecl policy test --engine ---------------------------------------------------------


def add_test_engine_option(t: argparse.ArgumentParser) -> None:
    t.add_argument("--engine", choices=ENGINES, default="opa",
                   help="opa (default): `opa test`; embedded: every test_* rule through rego-cpp, the "
                        "in-process engine (rego-cpp 1.5.2 cannot yet evaluate `with` over rules that "
                        "use other rules, so the shipped tests error there; see README); both: opa, "
                        "then embedded")


def run_embedded_tests(rego_dir: Path, *, verbose: bool = False) -> int:
    from enforcer.policy.rego_tests import run_directory

    report = run_directory(rego_dir)
    print(report.render(verbose=verbose))
    return 0 if report.ok else 1


def run_policy_tests(args: argparse.Namespace, run_opa: Callable[[], int]) -> int:
    """`opa test` and/or the embedded runner; the first non-zero status wins."""
    from enforcer.errors import ConfigError

    engine = getattr(args, "engine", "opa")
    if engine == "embedded" and getattr(args, "coverage", False):
        raise ConfigError("--coverage is measured by OPA: use --engine opa or both")
    status = 0
    if engine in ("opa", "both"):
        if engine == "both":
            print("== opa test", flush=True)
        status = run_opa()
    if engine in ("embedded", "both"):
        if engine == "both":
            print("== embedded engine (rego-cpp)", flush=True)
        embedded = run_embedded_tests(Path(args.rego), verbose=getattr(args, "verbose", False))
        status = status or embedded
    return status
