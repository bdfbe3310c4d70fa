"""The `aecl` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from enforcer import __version__
from enforcer.errors import AeclError, VerificationError

DEFAULT_CONFIG = "examples/aecl.yaml"


def _cmd_serve(args: argparse.Namespace) -> int:
    from enforcer.config import load_config
    from enforcer.server.app import serve

    config = load_config(Path(args.config))
    overrides = {}
    if args.listen:
        overrides["listen"] = args.listen
    if args.engine:
        overrides["policy"] = config.policy.model_copy(update={"engine": args.engine})
    if overrides:
        config = config.model_copy(update=overrides)
    asyncio.run(serve(config))
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from enforcer.audit.keys import generate_keypair

    private, public = generate_keypair(Path(args.out), overwrite=args.force)
    print(f"private key: {private} (mode 0600; keep it only on the service host)")
    print(f"public key:  {public} (give this to auditors)")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from enforcer.audit.keys import load_public_key
    from enforcer.audit.verify import EXIT_CODES, verify_file

    keys = [load_public_key(Path(p)) for p in args.pubkey]
    started = time.perf_counter()
    try:
        n = verify_file(Path(args.log), keys)
    except VerificationError as e:
        print(f"FAIL {args.log}: line {e.line}: {e.kind}: {e}", file=sys.stderr)
        return EXIT_CODES[e.kind]
    print(f"OK {args.log}: {n} entries; every signature and chain link verifies "
          f"({time.perf_counter() - started:.2f}s)")
    print("note: a log truncated at its end still verifies; compare the entry count with an "
          "independently kept record to rule that out")
    return 0


def _cmd_decide(args: argparse.Namespace) -> int:
    from enforcer.config import load_config
    from enforcer.manifests import load_agents, load_registry
    from enforcer.pipeline.policy_input import build_policy_input
    from enforcer.pipeline.request import CallRequest
    from enforcer.policy.decision import blocked_by_error, parse_decision
    from enforcer.policy.engine import create_engine
    from enforcer.policy.policyset import build_policy_set
    from enforcer.state.store import Task
    from enforcer.errors import ConfigError, PolicyError

    config = load_config(Path(args.config))
    if args.engine:
        config = config.model_copy(update={"policy": config.policy.model_copy(update={"engine": args.engine})})
    doc = json.loads(Path(args.input).read_text())
    registry = load_registry(config.tool_registry)
    tool = registry.get(doc["tool"])
    if tool is None:
        raise ConfigError(f"{args.input}: field 'tool': unknown tool '{doc['tool']}'")
    policy_set = build_policy_set(config.policy.rego_dir, load_agents(config.agents_dir), config.policy)
    engine = create_engine(policy_set, config.policy)
    now = time.time()
    task_doc = doc.get("task", {})
    task = Task(
        task_id="tsk_offline", agent_id=doc["agent_id"], declared_goal=task_doc.get("declared_goal", ""),
        declared_actions=tuple(task_doc.get("declared_actions", [])), started_at=now,
        expires_at=now + config.sandbox.task_timeout_s, calls_so_far=int(task_doc.get("calls_so_far", 0)),
    )
    ctx = doc.get("context", {})
    req = CallRequest(
        rpc="Decide", task_id=task.task_id, agent_id=doc["agent_id"], tool=doc["tool"], args=doc.get("args", {}),
        untrusted_input_source=bool(ctx.get("untrusted_input_source", False)),
        triggering_input=str(ctx.get("triggering_input", "")),
    )
    policy_input = build_policy_input(req, tool, task, now)
    try:
        decision = parse_decision(engine.evaluate(policy_input), revision=engine.revision, decision_id="offline")
    except PolicyError as e:
        decision = blocked_by_error(e, revision=engine.revision, decision_id="offline")
    finally:
        engine.close()
    out = {k: v for k, v in decision.__dict__.items() if k != "extra"}
    out["risk_flags"] = list(decision.risk_flags)
    if args.show_input:
        out["input"] = policy_input
    print(json.dumps(out, indent=2))
    return 0


def _cmd_policy_test(args: argparse.Namespace) -> int:
    from enforcer.policy.opa import find_opa_binary

    opa = find_opa_binary(args.opa)
    cmd = [opa, "test", "--ignore", "capabilities.json", args.rego, "-v" if args.verbose else "--format=pretty"]
    if args.coverage:
        cmd = [opa, "test", "--ignore", "capabilities.json", args.rego, "--coverage", "--threshold", str(args.threshold)]
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aecl",
        description="AECL, the Agent Execution Control Layer: decides, sandboxes and signs every agent tool call.",
    )
    p.add_argument("--version", action="version", version=f"aecl {__version__}")
    p.add_argument("-v", "--log-level", default="INFO", help="logging level (default INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the gRPC enforcement service",
                       description="Run the gRPC enforcement service until SIGINT or SIGTERM.")
    s.add_argument("--config", default=DEFAULT_CONFIG, help=f"service config file (default {DEFAULT_CONFIG})")
    s.add_argument("--listen", help="override the listen address, e.g. 127.0.0.1:50051")
    s.add_argument("--engine", choices=["embedded", "opa"], help="override the policy engine")
    s.set_defaults(func=_cmd_serve)

    k = sub.add_parser("keygen", help="create the audit signing key pair",
                       description="Create an Ed25519 key pair: audit.key (mode 0600) and audit.pub.")
    k.add_argument("--out", required=True, help="directory for audit.key and audit.pub")
    k.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    k.set_defaults(func=_cmd_keygen)

    v = sub.add_parser("verify", help="verify an audit log",
                       description="Check every signature and chain link of an audit log. Exit 0 when all "
                                   "hold; otherwise print the first bad line and exit with the code of its "
                                   "failure class: 10 malformed, 11 sequence, 12 chain, 13 hash, "
                                   "14 unknown key, 15 signature.")
    v.add_argument("--log", required=True, help="the audit log (JSON lines)")
    v.add_argument("--pubkey", required=True, action="append", help="trusted public key (PEM); repeatable")
    v.set_defaults(func=_cmd_verify)

    d = sub.add_parser("decide", help="evaluate one call from a JSON file (no service, no log)",
                       description="Evaluate one tool call offline against the configured policy, manifests "
                                   "and tool registry, and print the decision. Input file: "
                                   '{"agent_id", "tool", "args", "context": {"untrusted_input_source", '
                                   '"triggering_input"}, "task": {"declared_goal", "declared_actions", '
                                   '"calls_so_far"}}')
    d.add_argument("--config", default=DEFAULT_CONFIG, help=f"service config file (default {DEFAULT_CONFIG})")
    d.add_argument("--input", required=True, help="the call as JSON")
    d.add_argument("--engine", choices=["embedded", "opa"], help="override the policy engine")
    d.add_argument("--show-input", action="store_true", help="also print the policy input document")
    d.set_defaults(func=_cmd_decide)

    pol = sub.add_parser("policy", help="policy authoring tools")
    psub = pol.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    t = psub.add_parser("test", help="run the Rego unit tests with OPA",
                        description="Run `opa test` over the policy directory.")
    t.add_argument("--rego", default="rego", help="policy directory (default rego)")
    t.add_argument("--coverage", action="store_true", help="report coverage and enforce --threshold")
    t.add_argument("--threshold", type=float, default=95.0, help="minimum coverage percent (default 95)")
    t.add_argument("--opa", help="path to the opa binary (default: $OPA_BIN, PATH, .cache/opa/bin/opa)")
    t.add_argument("--verbose", action="store_true", help="list every test")
    t.set_defaults(func=_cmd_policy_test)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except AeclError as e:
        print(f"aecl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
