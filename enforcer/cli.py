"""The `aecl` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from enforcer import __version__, audit_cli, decide_cli
from enforcer.approvals_cli import add_approvals_parser
from enforcer.mcp_cli import add_mcp_parser
from enforcer.tools_cli import add_tools_parser
from enforcer.config import DEFAULT_CONFIG
from enforcer.errors import AeclError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
METRICS_OFF = "off"


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
        if args.metrics_listen:
            listen = None if args.metrics_listen == METRICS_OFF else args.metrics_listen
            overrides["metrics"] = config.metrics.model_copy(update={"listen": listen})
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


def _host_port(value: str) -> str:
    """HOST:PORT, the port a number (0: any free port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:50051), not {value!r}")
    return value


def _metrics_listen(value: str) -> str:
    return value if value == METRICS_OFF else _host_port(value)


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"unknown level {value!r}; choose one of {', '.join(LOG_LEVELS)}")
    return level


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aecl",
        description="AECL, the Agent Execution Control Layer: decides, sandboxes and signs every agent tool call.",
    )
    p.add_argument("--version", action="version", version=f"aecl {__version__}")
    p.add_argument("--log-level", default="INFO", type=_log_level, metavar="LEVEL",
                   help=f"logging level: {', '.join(LOG_LEVELS)} (default INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the gRPC enforcement service",
                       description="Run the gRPC enforcement service until SIGINT or SIGTERM.")
    s.add_argument("--config", default=DEFAULT_CONFIG, help=f"service config file (default {DEFAULT_CONFIG})")
    s.add_argument("--listen", type=_host_port, metavar="HOST:PORT",
                   help="serve gRPC here instead of the config's `listen` (port 0: any free port)")
    s.add_argument("--metrics-listen", type=_metrics_listen, metavar="HOST:PORT",
                   help="serve /metrics here instead of the config's `metrics.listen`; 'off' serves none")
    s.add_argument("--engine", choices=["embedded", "opa"], help="override the policy engine")
    s.set_defaults(func=_cmd_serve)

    k = sub.add_parser("keygen", help="create the audit signing key pair",
                       description="Create an Ed25519 key pair: audit.key (mode 0600) and audit.pub.")
    k.add_argument("--out", required=True, help="directory for audit.key and audit.pub")
    k.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    k.set_defaults(func=_cmd_keygen)

    audit_cli.add_parsers(sub)

    from enforcer.credentials_cli import add_admin_parser, add_credentials_parser
    from enforcer.identity.certs import add_certs_parser

    add_credentials_parser(sub)
    add_admin_parser(sub)
    add_approvals_parser(sub)
    add_tools_parser(sub)
    add_mcp_parser(sub)
    add_certs_parser(sub)

    decide_cli.add_parser(sub, DEFAULT_CONFIG)

    pol = sub.add_parser("policy", help="policy authoring tools")
    psub = pol.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    from enforcer.policy_cli import add_policy_parsers

    add_policy_parsers(psub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except AeclError as e:
        print(f"aecl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
