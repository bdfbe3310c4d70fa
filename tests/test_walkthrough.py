"""The README's five-minute walkthrough, run for real: the service started on
a fresh var/, the demo played against it, and every console block's commands
run, their output compared with what the README shows (ids, digests, times,
ports and paths masked; everything else must match line for line).
scripts/check-readme.py does the same for the --help blocks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml

from tests.conftest import REPO, World, free_port, write_config
from tests.mcp.conftest import filesystem_upstream, mcp_node_modules  # noqa: F401 - the fixture

README = REPO / "README.md"
MASKS = [
    (re.compile(r"\b(tsk|evt|apr|dec|sbx)_[0-9a-f]{32}\b"), r"\1_<id>"),
    (re.compile(r"\bsnap_[0-9a-f]{16}\b"), "snap_<id>"),
    (re.compile(r"\btr_[0-9a-f]{16}\b"), "tr_<id>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z"), "<time>"),
    (re.compile(r"sha256:[0-9a-f]{64}"), "sha256:<digest>"),
    (re.compile(r"\(\d+\.\d+s\)"), "(<t>s)"),
    (re.compile(r"\b127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
]


def walkthrough_blocks() -> list[list[tuple[str, list[str]]]]:
    """Each ```console block of the walkthrough: [(command, expected lines)]."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Five-minute walkthrough"):text.index("\n## ", text.index("## Five-minute") + 5)]
    blocks = []
    for body in re.findall(r"```console\n(.*?)```", section, re.S):
        steps: list[tuple[str, list[str]]] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        blocks.append(steps)
    return blocks


def mask(lines: list[str], root: Path) -> list[str]:
    out = []
    for line in lines:
        line = line.replace(str(root), "<root>").replace("/home/you/aecl", "<root>")
        for pattern, repl in MASKS:
            line = pattern.sub(repl, line)
        out.append(line.rstrip())
    return out


def same(got: list[str], expected: list[str]) -> None:
    """The README's lines and what ran, with a diff when they differ (pytest cuts long list diffs)."""
    if got != expected:
        import difflib
        raise AssertionError("the README differs from what ran:\n" + "\n".join(
            difflib.unified_diff(expected, got, "README.md", "ran", lineterm="")))


def after_ellipsis(expected: list[str]) -> list[str]:
    """A block may start its output with '...': then only what follows is compared
    (with the same number of lines from the end of what ran)."""
    return expected[expected.index("...") + 1:] if "..." in expected else expected


def shell(command: str, root: Path) -> list[str]:
    command = command.replace(".venv/bin/aecl", f"{sys.executable} -m enforcer")
    command = command.replace("/tmp/audit-copy.jsonl", str(root / "audit-copy.jsonl"))
    out = subprocess.run(["bash", "-c", command], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    return out.stdout.replace(str(root / "audit-copy.jsonl"), "/tmp/audit-copy.jsonl").splitlines()


@pytest.fixture
def service(tmp_path, mcp_node_modules):
    """`make run`'s service, example world and MCP front end (over the real
    server-filesystem), on the walkthrough's paths (var/ under a fresh root)."""
    world = World(tmp_path / "var" / "world")
    workspace = tmp_path / "var" / "mcp-workspace"
    workspace.mkdir(parents=True)
    fs = filesystem_upstream(mcp_node_modules, workspace).model_dump(mode="json", exclude_defaults=True)
    config = write_config(tmp_path / "var", world=world.urls, metrics={"listen": f"127.0.0.1:{free_port()}"},
                          console={"listen": f"127.0.0.1:{free_port()}"},
                          mcp={"listen": f"127.0.0.1:{free_port()}", "upstreams": {"fs": fs}})
    out = tmp_path / "serve.out"
    proc = subprocess.Popen([sys.executable, "-m", "enforcer", "serve", "--config", str(config)], cwd=REPO,
                            stdout=open(out, "w"), stderr=subprocess.DEVNULL)
    address = yaml.safe_load(config.read_text())["listen"]
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=30)
    channel.close()
    yield proc, address, out
    if proc.poll() is None:
        proc.terminate()
        proc.wait(15)
    world.stop()


def test_the_walkthrough_prints_what_the_readme_shows(service, tmp_path):
    proc, address, banner = service
    blocks = walkthrough_blocks()
    assert [b[0][0] for b in blocks[:2]] == ["make run", "make demo"]
    assert any("--checkpoint" in cmd for b in blocks for cmd, _ in b)

    # make run: the banner the service prints once it listens.
    expected = after_ellipsis(blocks[0][0][1])
    printed = banner.read_text().splitlines()
    got = [line for line in printed if line.strip()][-len(expected):]
    expected = [re.sub(r"config:  \S+", "config:  <config>", line) for line in expected]
    got = [re.sub(r"config:  \S+", "config:  <config>", line) for line in got]
    assert mask(got, tmp_path) == mask(expected, tmp_path)

    # make demo: everything from the part the README quotes.
    demo = subprocess.run([sys.executable, str(REPO / "examples" / "demo.py"), "--target", address,
                           "--key-file", str(tmp_path / "var" / "credentials" / "finance_agent_v2.key"),
                           "--world", str(tmp_path / "var" / "world" / "world.json")],
                          capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    expected = after_ellipsis(blocks[1][0][1])
    lines = demo.stdout.splitlines()
    got = lines[lines.index(expected[0]):] if expected[0] in lines else lines
    same(mask(got, tmp_path), mask(expected, tmp_path))

    # The auditor's blocks, in order; the service stops before the one that
    # needs the checkpoint written at shutdown.
    for block in blocks[2:]:
        if any("--checkpoint" in cmd for cmd, _ in block) and proc.poll() is None:
            proc.terminate()
            proc.wait(15)
        for i, (command, expected) in enumerate(block):
            got = shell(command, tmp_path)
            assert mask(got, tmp_path) == mask(expected, tmp_path), f"README block {block[0][0]!r}, step {i + 1}"
