"""Shared fixtures for the MCP gateway's tests: the real third-party MCP
servers from npm (@modelcontextprotocol/server-filesystem and
server-everything), installed by scripts/setup-mcp.sh, run under Debian's
node inside real bubblewrap."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from enforcer.config import McpUpstreamConfig
from tests.conftest import REPO

SANDBOX_NODE_MODULES = "/opt/mcp/node_modules"
FILESYSTEM = f"{SANDBOX_NODE_MODULES}/@modelcontextprotocol/server-filesystem/dist/index.js"
EVERYTHING = f"{SANDBOX_NODE_MODULES}/@modelcontextprotocol/server-everything/dist/index.js"


@pytest.fixture(scope="session")
def mcp_node_modules() -> Path:
    """The host node_modules holding both npm servers (installed now if
    missing). Skips when node or npm is missing or the install fails."""
    if not shutil.which("node"):
        pytest.skip("node is not installed: the MCP tests run real npm MCP servers "
                    "(Debian: apt-get install nodejs npm; scripts/setup.sh --dev does)")
    p = subprocess.run([str(REPO / "scripts" / "setup-mcp.sh")], capture_output=True, text=True,
                       timeout=600, check=False)
    if p.returncode != 0:
        pytest.skip(f"scripts/setup-mcp.sh could not install the npm MCP servers: {p.stderr.strip()[-800:]}")
    nm = Path(p.stdout.strip().splitlines()[-1])
    for server in ("server-filesystem", "server-everything"):
        if not (nm / "@modelcontextprotocol" / server / "dist" / "index.js").is_file():
            pytest.skip(f"@modelcontextprotocol/{server} is missing under {nm}")
    return nm


def filesystem_upstream(node_modules: Path, workspace: Path, *, allowed: str = "/workspace",
                        **extra) -> McpUpstreamConfig:
    """server-filesystem in its sandbox over `workspace` (at /workspace),
    serving `allowed` (its own allow list: "/" leaves the sandbox as the
    only boundary)."""
    return McpUpstreamConfig.model_validate({"stdio": {
        "command": ["/usr/bin/node", FILESYSTEM, allowed],
        "workspace": str(workspace),
        "ro_binds": [{"host": str(node_modules), "path": SANDBOX_NODE_MODULES}],
        **extra,
    }})


def everything_upstream(node_modules: Path, **extra) -> McpUpstreamConfig:
    """server-everything (stdio) in its sandbox, without a workspace."""
    return McpUpstreamConfig.model_validate({"stdio": {
        "command": ["/usr/bin/node", EVERYTHING, "stdio"],
        "ro_binds": [{"host": str(node_modules), "path": SANDBOX_NODE_MODULES}],
        **extra,
    }})
