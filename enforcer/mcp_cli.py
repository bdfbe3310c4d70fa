"""`aecl mcp ...`: the MCP front end's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from enforcer.config import DEFAULT_CONFIG


def add_mcp_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mcp", help="the MCP front end: AECL in front of MCP servers",
                       description="AECL serves MCP (spec 2026-07-28) at http://<mcp.listen>/mcp when the config "
                                   "names mcp.listen (`aecl serve` does it). `aecl mcp stdio` is the same front end "
                                   "for clients that launch a local command.")
    msub = p.add_subparsers(dest="mcp_command", metavar="COMMAND", required=True)
    s = msub.add_parser("stdio", help="speak MCP on stdin/stdout for one agent, through the running service",
                        description="Relay MCP between stdin/stdout and the running service's MCP endpoint, as "
                                    "the agent whose API key is in --credential-file (0600). There is one "
                                    "pipeline and one audit log: start `aecl serve` (or `make run`) first. Exit 0 "
                                    "at the end of stdin, 1 when the service refuses the credential, 2 on a usage "
                                    "or config error.")
    s.add_argument("--agent", required=True, help="the agent id the credential belongs to")
    s.add_argument("--credential-file", required=True, type=Path, help="file holding the agent's API key (0600)")
    s.add_argument("--config", default=DEFAULT_CONFIG, help=f"service config, for mcp.listen (default {DEFAULT_CONFIG})")
    s.add_argument("--url", help="the service's MCP endpoint (default http://<mcp.listen>/mcp from --config)")
    s.set_defaults(func=cmd_stdio)


def cmd_stdio(args: argparse.Namespace) -> int:
    from enforcer.config import load_config
    from enforcer.errors import ConfigError
    from enforcer.mcp.stdio_bridge import read_credential, relay

    try:
        key = read_credential(args.credential_file)
        url = args.url
        if url is None:
            listen = load_config(Path(args.config)).mcp.listen
            if listen is None:
                raise ConfigError(f"{args.config}: mcp.listen is not set: the service serves no MCP endpoint "
                                  "(or pass --url)")
            url = f"http://{listen}/mcp"
    except ConfigError as e:
        print(f"aecl mcp stdio: {e}", file=sys.stderr)
        return 2
    if not key.startswith("aecl_"):
        print("aecl mcp stdio: the credential file does not hold an AECL API key", file=sys.stderr)
        return 2
    return relay(url, key, args.agent)
