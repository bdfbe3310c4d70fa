#!/usr/bin/env python3
"""Check that the CLI help quoted in README.md matches the real `aecl` help.

Each block to check is an HTML comment marker naming the command, followed
immediately by a fenced code block holding that command's `--help` output:

    <!-- help: aecl verify -->
    ```text
    usage: aecl verify [-h] --log LOG --pubkey PUBKEY
    ...
    ```

For every marker the script runs `<aecl> <args> --help` with COLUMNS=80 and
compares the output with the block. Exit status: 0 when every block is
current, 1 when any block is stale or a marker has no fenced block after it
(each is listed, with a diff), 2 when the check cannot run (no README, no
markers, or the help command fails). With --fix, stale blocks are rewritten
in place and the exit status is 0.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = "80"

# The marker, then on the very next line a fence (``` or longer, optional info
# string), the body, and the same fence closing it.
MARKER_RE = re.compile(r"<!--\s*help:\s*(?P<command>aecl\b[^>]*?)\s*-->[ \t]*\n")
FENCE_RE = re.compile(r"(?P<fence>`{3,})[^\n`]*\n")


@dataclass
class Block:
    command: str  # e.g. "aecl policy test"
    line: int  # 1-based line of the marker
    body_start: int  # offsets of the body inside the README text
    body_end: int
    body: str


class CheckError(Exception):
    """The check could not run at all (exit 2)."""


def default_aecl() -> str:
    venv_aecl = REPO / ".venv" / "bin" / "aecl"
    if venv_aecl.exists():
        return str(venv_aecl)
    beside = Path(sys.executable).with_name("aecl")
    return str(beside)


def find_blocks(text: str) -> tuple[list[Block], list[str]]:
    """Blocks after markers, and problems (markers without a fenced block)."""
    blocks: list[Block] = []
    problems: list[str] = []
    for m in MARKER_RE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        command = " ".join(m.group("command").split())
        fence = FENCE_RE.match(text, m.end())
        if fence is None:
            problems.append(f"line {line}: <!-- help: {command} --> is not followed by a fenced code block")
            continue
        close = re.compile(r"^" + re.escape(fence.group("fence")) + r"[ \t]*$", re.MULTILINE)
        end = close.search(text, fence.end())
        if end is None:
            problems.append(f"line {line}: the fenced block after <!-- help: {command} --> is never closed")
            continue
        body = text[fence.end():end.start()]
        blocks.append(Block(command, line, fence.end(), end.start(), body))
    return blocks, problems


def help_text(aecl: str, command: str) -> str:
    args = shlex.split(command)[1:]  # drop the leading "aecl"
    env = {**os.environ, "COLUMNS": COLUMNS, "NO_COLOR": "1", "PYTHON_COLORS": "0"}
    try:
        r = subprocess.run([aecl, *args, "--help"], capture_output=True, text=True, env=env, timeout=60)
    except OSError as e:
        raise CheckError(f"cannot run {aecl}: {e.strerror} (run `make setup` first)") from e
    if r.returncode != 0:
        raise CheckError(f"`{command} --help` exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout.rstrip("\n") + "\n"


def check(readme: Path, aecl: str, fix: bool) -> int:
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as e:
        raise CheckError(f"{readme}: cannot read: {e.strerror}") from e
    blocks, problems = find_blocks(text)
    if not blocks and not problems:
        raise CheckError(f"{readme}: no <!-- help: aecl ... --> markers found")

    stale: list[tuple[Block, str]] = []
    for block in blocks:
        expected = help_text(aecl, block.command)
        if block.body != expected:
            stale.append((block, expected))

    for p in problems:
        print(f"{readme}: {p}", file=sys.stderr)
    if fix and stale:
        # Rewrite from the end so earlier offsets stay valid.
        for block, expected in sorted(stale, key=lambda s: s[0].body_start, reverse=True):
            text = text[: block.body_start] + expected + text[block.body_end:]
        readme.write_text(text, encoding="utf-8")
        for block, _ in stale:
            print(f"{readme}:{block.line}: rewrote the help block of `{block.command}`")
        return 1 if problems else 0

    for block, expected in stale:
        print(f"{readme}:{block.line}: stale help block for `{block.command}`", file=sys.stderr)
        diff = difflib.unified_diff(
            block.body.splitlines(), expected.splitlines(),
            fromfile=f"README ({block.command})", tofile=f"`{block.command} --help`", lineterm="",
        )
        for d in diff:
            print(f"    {d}", file=sys.stderr)
    if stale or problems:
        if stale:
            print(f"{len(stale)} stale help block(s); run `{Path(sys.argv[0]).as_posix()} --fix` to rewrite them",
                  file=sys.stderr)
        return 1
    print(f"{readme}: {len(blocks)} help blocks match `aecl ... --help` (COLUMNS={COLUMNS})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Check that the `aecl ... --help` blocks quoted in README.md (each after a "
                    "<!-- help: aecl ... --> marker) match the real help output at COLUMNS=80. "
                    "Exit 0 when current, 1 when a block is stale or a marker has no block, "
                    "2 when the check cannot run.",
    )
    ap.add_argument("--readme", type=Path, default=REPO / "README.md",
                    help="the README to check (default: README.md of this repository)")
    ap.add_argument("--aecl", default=None,
                    help="the aecl executable (default: .venv/bin/aecl of this repository)")
    ap.add_argument("--fix", action="store_true", help="rewrite stale blocks in place instead of failing")
    opts = ap.parse_args(argv)
    try:
        return check(opts.readme, opts.aecl or default_aecl(), opts.fix)
    except CheckError as e:
        print(f"check-readme: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
