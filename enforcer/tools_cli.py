"""`aecl tools check`: how each write tool of the registry is undone.

Every write tool declares exactly one of: a compensation (the registered
tool that undoes it, and where that tool's arguments come from), `irreversible:
true` (nothing undoes it: the shipped policy makes human approval mandatory
for it), or `nothing_to_undo` (its effect does not outlive its sandbox, said
why). A write tool that declares none fails the check (exit 1), so a new
tool cannot reach production without someone deciding how it is undone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from enforcer.config import DEFAULT_CONFIG


def add_tools_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tools", help="the tool registry: how each write tool is undone",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="tools_command", metavar="COMMAND", required=True)
    c = tsub.add_parser("check", help="list every write tool with its compensation or irreversibility; exit 1 "
                                      "if one declares neither",
                        description="List every write tool of the registry with its compensation (tool and "
                                    "argument sources), its irreversibility (human approval mandatory), or why "
                                    "there is nothing to undo. Exit 0 when every write tool declares one, 1 when "
                                    "one declares none, 2 when the config or registry does not load.")
    c.add_argument("--config", default=DEFAULT_CONFIG, help=f"service config file (default {DEFAULT_CONFIG})")
    c.add_argument("--registry", help="a tool registry file to check instead of the config's")
    c.add_argument("--json", action="store_true", help="one JSON document instead of text")
    c.set_defaults(func=cmd_check)


def describe(name: str, tool) -> dict:
    """One write tool's way to be undone, or None as `undo` when it declares none."""
    if tool.compensation is not None:
        args = {k: (f"args.{v.name}" if v.source == "args" else v.source)
                for k, v in tool.compensation.args.items()}
        return {"tool": name, "undo": "compensation", "compensation": tool.compensation.tool, "args": args}
    if tool.irreversible:
        return {"tool": name, "undo": "irreversible", "note": "no compensation: human approval is mandatory"}
    if tool.nothing_to_undo:
        return {"tool": name, "undo": "nothing_to_undo", "note": tool.nothing_to_undo}
    return {"tool": name, "undo": None, "note": "declares no compensation, no irreversible: true and no "
                                                "nothing_to_undo"}


def cmd_check(args: argparse.Namespace) -> int:
    from enforcer.errors import ConfigError
    from enforcer.manifests import load_registry

    try:
        if args.registry:
            path = Path(args.registry)
        else:
            from enforcer.config import load_config
            path = load_config(Path(args.config)).tool_registry
        registry = load_registry(path)
    except ConfigError as e:
        print(f"aecl tools check: {e}", file=sys.stderr)
        return 2
    rows = [describe(n, t) for n, t in sorted(registry.tools.items()) if t.access == "write"]
    missing = [r["tool"] for r in rows if r["undo"] is None]
    if args.json:
        print(json.dumps({"registry": str(path), "write_tools": rows, "undeclared": missing}, indent=2))
    else:
        print(f"{path}: {len(rows)} write tool(s)")
        width = max((len(r["tool"]) for r in rows), default=0)
        for r in rows:
            if r["undo"] == "compensation":
                sources = ", ".join(f"{k} <- {v}" for k, v in r["args"].items()) or "no arguments"
                what = f"compensated by {r['compensation']} ({sources})"
            elif r["undo"] is None:
                what = f"UNDECLARED: {r['note']}"
            else:
                what = f"{r['undo'].replace('_', ' ')}: {r['note']}"
            print(f"  {r['tool']:<{width}}  {what}")
        if missing:
            print(f"{len(missing)} write tool(s) declare no way to be undone: {', '.join(missing)}; give each a "
                  "`compensation`, `irreversible: true` or `nothing_to_undo: <why>`", file=sys.stderr)
    return 1 if missing else 0
