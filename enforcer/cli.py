"""The `aecl` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
from pathlib import Path

from enforcer import __version__, audit_cli, decide_cli
from enforcer.config import DEFAULT_CONFIG
from enforcer.errors import AeclError


def _cmd_serve(args: argparse.Namespace) -> int:
    from enforcer.config import load_config
    from enforcer.server.app import serve

    path = Path(args.config)

    def load():
        # Re-read on every hot reload; command-line overrides keep applying.
        config = load_config(path)
        overrides = {}
        if args.listen:
            overrides["listen"] = args.listen
        if args.engine:
            overrides["policy"] = config.policy.model_copy(update={"engine": args.engine})
        return config.model_copy(update=overrides) if overrides else config

    asyncio.run(serve(load(), load_config=load, config_path=path))
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from enforcer.audit.keys import generate_keypair

    private, public = generate_keypair(Path(args.out), overwrite=args.force)
    print(f"private key: {private} (mode 0600; keep it only on the service host)")
    print(f"public key:  {public} (give this to auditors)")
    return 0


def _cmd_policy_test(args: argparse.Namespace) -> int:
    from enforcer.policy.opa import find_opa_binary
    from enforcer.policy_cli import run_policy_tests

    def run_opa() -> int:
        opa = find_opa_binary(args.opa)
        cmd = [opa, "test", "--ignore", "capabilities.json", args.rego, "-v" if args.verbose else "--format=pretty"]
        if args.coverage:
            cmd = [opa, "test", "--ignore", "capabilities.json", args.rego, "--coverage", "--threshold",
                   str(args.threshold)]
        return subprocess.call(cmd)

    return run_policy_tests(args, run_opa)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aecl",
        description="AECL, the Agent Execution Control Layer: decides, sandboxes and signs every agent tool call.",
    )
    p.add_argument("--version", action="version", version=f"aecl {__version__}")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
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

    audit_cli.add_parsers(sub)

    decide_cli.add_parser(sub, DEFAULT_CONFIG)

    pol = sub.add_parser("policy", help="policy authoring tools")
    psub = pol.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    t = psub.add_parser("test", help="run the Rego unit tests with OPA and the embedded engine",
                        description="Run the Rego unit tests of the policy directory with `opa test` and/or "
                                    "through the embedded engine (rego-cpp). Exit 0 when every test passes.")
    t.add_argument("--rego", default="rego", help="policy directory (default rego)")
    t.add_argument("--coverage", action="store_true", help="report coverage and enforce --threshold")
    t.add_argument("--threshold", type=float, default=95.0, help="minimum coverage percent (default 95)")
    t.add_argument("--opa", help="path to the opa binary (default: $OPA_BIN, PATH, .cache/opa/bin/opa)")
    t.add_argument("--verbose", action="store_true", help="list every test")
    t.set_defaults(func=_cmd_policy_test)
    from enforcer.policy_cli import add_replay_parser, add_test_engine_option

    add_test_engine_option(t)
    add_replay_parser(psub)
    from enforcer.policy_build_cli import add_build_parser

    add_build_parser(psub)
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
