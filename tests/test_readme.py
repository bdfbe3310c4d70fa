"""README.md quotes the CLI's --help output; scripts/check-readme.py keeps it honest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

CHECKER = REPO / "scripts" / "check-readme.py"
README = REPO / "README.md"


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKER), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def stale_copy(tmp_path: Path) -> Path:
    """A copy of the README whose `aecl verify` help block lost an option."""
    text = README.read_text(encoding="utf-8")
    marker = "<!-- help: aecl verify -->\n"
    assert text.count(marker) == 1
    start = text.index(marker)
    at = text.index("\n  --pubkey PUBKEY ", start) + 1
    line = text[at:text.index("\n", at) + 1]
    copy = tmp_path / "README.md"
    copy.write_text(text[:at] + text[at + len(line):], encoding="utf-8")
    return copy


def test_readme_help_blocks_are_current():
    r = check()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "help blocks match" in r.stdout


def test_stale_help_block_is_reported(tmp_path):
    copy = stale_copy(tmp_path)
    r = check("--readme", str(copy))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "stale help block for `aecl verify`" in r.stderr
    assert "+  --pubkey PUBKEY" in r.stderr  # the diff shows what is missing
    for fresh in ("`aecl serve`", "`aecl keygen`", "`aecl decide`", "`aecl policy test`"):
        assert f"stale help block for {fresh}" not in r.stderr


def test_fix_rewrites_only_the_stale_block(tmp_path):
    copy = stale_copy(tmp_path)
    r = check("--readme", str(copy), "--fix")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rewrote the help block of `aecl verify`" in r.stdout
    assert copy.read_text(encoding="utf-8") == README.read_text(encoding="utf-8")
    assert check("--readme", str(copy)).returncode == 0


def test_marker_without_fenced_block_fails(tmp_path):
    copy = tmp_path / "README.md"
    copy.write_text("# x\n\n<!-- help: aecl keygen -->\nno block here\n", encoding="utf-8")
    r = check("--readme", str(copy))
    assert r.returncode == 1
    assert "is not followed by a fenced code block" in r.stderr


def test_help_exits_zero():
    r = check("--help")
    assert r.returncode == 0
    assert "--fix" in r.stdout and "--readme" in r.stdout
