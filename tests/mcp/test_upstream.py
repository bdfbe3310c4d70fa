"""enforcer.mcp.upstream against real third-party MCP servers from npm
(server-filesystem, server-everything) run by Debian's node inside real
bubblewrap, and a real Streamable HTTP server (the official Python SDK)
reached through a connector. Nothing is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import signal
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from enforcer.config import McpUpstreamConfig
from enforcer.connectors.proxy import Connector
from enforcer.errors import ConfigError, SandboxError
from enforcer.mcp.upstream import UpstreamError, Upstreams, stdio_argv
from enforcer.sandbox.profile import DEFAULT_PROFILE, load_profile
from tests.conftest import free_port, require_bwrap
from tests.mcp.conftest import everything_upstream, filesystem_upstream

pytestmark = pytest.mark.bwrap

# Bounds on polling loops: generous, never asserted on.
BOUND_S = 30.0


@pytest.fixture(autouse=True)
def _bwrap() -> None:
    require_bwrap()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=120))


@contextlib.asynccontextmanager
async def running(configs: dict, **kw):
    up = Upstreams(configs, **kw)
    await up.start()
    try:
        yield up
    finally:
        await up.stop()


async def poll(predicate, what: str):
    loop = asyncio.get_running_loop()
    end = loop.time() + BOUND_S
    while not predicate():
        if loop.time() > end:
            pytest.fail(f"not within {BOUND_S}s: {what}")
        await asyncio.sleep(0.05)


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


def alive(pid: int) -> bool:
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("# demo workspace\nhello from the host\n")
    return ws


# -- server-filesystem ------------------------------------------------------

def test_filesystem_reads_and_writes_its_workspace(mcp_node_modules, workspace):
    async def main():
        async with running({"fs": filesystem_upstream(mcp_node_modules, workspace)}) as up:
            names = {t.name for t in await up.list_tools("fs")}
            assert {"read_text_file", "write_file"} <= names
            assert up.sandbox_id("fs").startswith("mcpsbx_")
            assert isinstance(up.pid("fs"), int)

            r = await up.call("fs", "read_text_file", {"path": "/workspace/README.md"})
            assert not r.is_error, text(r)
            assert text(r) == "# demo workspace\nhello from the host\n"

            r = await up.call("fs", "write_file", {"path": "/workspace/new.txt", "content": "written in the sandbox"})
            assert not r.is_error, text(r)
            assert (workspace / "new.txt").read_text() == "written in the sandbox"

            # Many calls over the one long-lived process.
            for _ in range(5):
                assert not (await up.call("fs", "list_directory", {"path": "/workspace"})).is_error
    run(main())


def test_filesystem_sandbox_hides_the_host(mcp_node_modules, workspace, tmp_path):
    """server-filesystem allowed to serve "/" (its own check out of the
    way): the sandbox alone keeps the host's home, keys and checkout out."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "audit-signing.key").write_text("PRIVATE KEY MATERIAL\n")
    secret = keys / "audit-signing.key"

    async def main():
        async with running({"fs": filesystem_upstream(mcp_node_modules, workspace, allowed="/")}) as up:
            # Control: the server serves what the sandbox holds.
            r = await up.call("fs", "read_text_file", {"path": "/workspace/README.md"})
            assert not r.is_error and "hello from the host" in text(r)

            for path in [str(secret), "/root/.ssh/id_rsa", "/root", "/work", str(Path.cwd() / "pyproject.toml"),
                         "/etc/passwd", "/etc/aecl", "/var/lib", "/home"]:
                r = await up.call("fs", "read_text_file", {"path": path})
                assert r.is_error, f"{path} was readable in the sandbox: {text(r)[:200]}"
                assert "PRIVATE KEY" not in text(r)

            r = await up.call("fs", "list_directory", {"path": "/"})
            assert not r.is_error, text(r)
            entries = {line.split(" ", 1)[1] for line in text(r).splitlines() if line.startswith("[")}
            assert entries <= {"usr", "bin", "sbin", "lib", "lib64", "opt", "workspace", "tmp", "proc", "dev"}, entries

            for path in ["/usr/planted", "/planted", "/opt/mcp/node_modules/planted"]:
                r = await up.call("fs", "write_file", {"path": path, "content": "x"})
                assert r.is_error, f"{path} was writable"
    run(main())


def test_filesystem_refuses_paths_outside_its_allowed_dirs(mcp_node_modules, workspace):
    async def main():
        async with running({"fs": filesystem_upstream(mcp_node_modules, workspace)}) as up:
            r = await up.call("fs", "read_text_file", {"path": "/root/.ssh/id_rsa"})
            assert r.is_error and "outside allowed directories" in text(r)
            r = await up.call("fs", "write_file", {"path": "/tmp/outside.txt", "content": "x"})
            assert r.is_error
    run(main())


# -- server-everything: environment and network ------------------------------

class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).hits.append(self.path)
        body = b"reachable from the host"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def host_http_server():
    """A real HTTP server on the host's loopback; yields (url, hits)."""
    handler = type("Recorder", (_Recorder,), {"hits": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    finally:
        server.shutdown()
        server.server_close()
        t.join()


def test_everything_sees_only_the_configured_environment(mcp_node_modules, monkeypatch):
    monkeypatch.setenv("AECL_TEST_CANARY", "service-secret")
    env = {"AECL_MCP_TEST": "configured"}

    async def main():
        async with running({"ev": everything_upstream(mcp_node_modules, env=env)}) as up:
            r = await up.call("ev", "get-env", {})
            assert not r.is_error, text(r)
            return json.loads(text(r))
    seen = run(main())
    profile_env = load_profile(DEFAULT_PROFILE).env
    assert seen["AECL_MCP_TEST"] == "configured"
    assert "AECL_TEST_CANARY" not in seen and "service-secret" not in json.dumps(seen)
    # Only the profile's and the config's variables (and what node or the
    # server set themselves).
    assert set(seen) <= set(profile_env) | set(env) | {"PWD", "NODE_ENV", "SHLVL", "OLDPWD"}, seen
    assert {k: seen[k] for k in profile_env} == dict(profile_env)


def test_everything_cannot_reach_the_network(mcp_node_modules, host_http_server):
    url, hits = host_http_server
    with urllib.request.urlopen(url + "/from-host", timeout=10) as resp:  # the control: it is up
        assert resp.read() == b"reachable from the host"

    async def main():
        async with running({"ev": everything_upstream(mcp_node_modules)}) as up:
            # Control: the tool works on what needs no network.
            r = await up.call("ev", "gzip-file-as-resource",
                              {"name": "ok.gz", "data": "data:text/plain;base64,aGVsbG8=", "outputType": "resource"})
            assert not r.is_error, text(r)
            r = await up.call("ev", "gzip-file-as-resource",
                              {"name": "leak.gz", "data": url + "/from-sandbox", "outputType": "resource"})
            assert r.is_error, text(r)
            assert "fetch failed" in text(r)
    run(main())
    assert hits == ["/from-host"]


# -- restarts -----------------------------------------------------------------

def test_killing_the_sandbox_mid_call_fails_the_call_and_restarts(mcp_node_modules):
    async def main():
        async with running({"ev": everything_upstream(mcp_node_modules)}) as up:
            pid, sid = up.pid("ev"), up.sandbox_id("ev")
            assert pid is not None and alive(pid)
            call = asyncio.create_task(up.call("ev", "trigger-long-running-operation", {"duration": 60, "steps": 60}))
            await asyncio.sleep(0.5)
            assert not call.done()
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(UpstreamError) as e:
                await asyncio.wait_for(call, timeout=BOUND_S)
            assert isinstance(e.value, SandboxError) and e.value.code == "mcp_upstream_unavailable"
            assert e.value.upstream == "ev"
            msg = str(e.value)
            assert "MCP upstream ev" in msg and "trigger-long-running-operation" in msg
            assert "connection" in msg and "restarted" in msg

            r = await up.call("ev", "echo", {"message": "after the restart"})
            assert not r.is_error and "after the restart" in text(r)
            assert up.pid("ev") not in (None, pid)
            assert up.sandbox_id("ev") != sid and up.sandbox_id("ev").startswith("mcpsbx_")
            assert {t.name for t in await up.list_tools("ev")} >= {"echo", "get-env"}
    run(main())


def test_a_call_that_times_out_restarts_the_upstream(mcp_node_modules):
    async def main():
        async with running({"ev": everything_upstream(mcp_node_modules)}) as up:
            pid, sid = up.pid("ev"), up.sandbox_id("ev")
            with pytest.raises(UpstreamError, match=r"did not answer within 0\.5s"):
                await up.call("ev", "trigger-long-running-operation", {"duration": 60, "steps": 60}, timeout_s=0.5)
            r = await up.call("ev", "echo", {"message": "fresh"}, timeout_s=BOUND_S)
            assert not r.is_error
            assert up.pid("ev") != pid and up.sandbox_id("ev") != sid
            await poll(lambda: not alive(pid), "the timed-out sandbox is killed")
    run(main())


def test_a_sandbox_that_dies_between_calls_is_restarted(mcp_node_modules):
    async def main():
        async with running({"ev": everything_upstream(mcp_node_modules)}) as up:
            pid = up.pid("ev")
            os.kill(pid, signal.SIGKILL)
            await poll(lambda: up.pid("ev") not in (None, pid), "a new sandbox runs")
            assert not (await up.call("ev", "echo", {"message": "x"})).is_error
    run(main())


def test_stop_leaves_no_process(mcp_node_modules, workspace):
    async def main():
        up = Upstreams({"fs": filesystem_upstream(mcp_node_modules, workspace),
                        "ev": everything_upstream(mcp_node_modules)})
        await up.start()
        pids = [up.pid("fs"), up.pid("ev")]
        await up.stop()
        await poll(lambda: not any(alive(p) for p in pids), "every sandbox has exited")
        with pytest.raises(UpstreamError, match="not running"):
            await up.call("ev", "echo", {"message": "x"})
    run(main())


# -- start-up failures and configuration ------------------------------------------

def test_an_upstream_that_cannot_start_is_named_with_its_stderr(mcp_node_modules, workspace):
    broken = McpUpstreamConfig.model_validate({"stdio": {
        "command": ["/usr/bin/node", "/opt/mcp/node_modules/no-such-server/index.js"],
        "ro_binds": [{"host": str(mcp_node_modules), "path": "/opt/mcp/node_modules"}]}})

    async def main():
        up = Upstreams({"fs": filesystem_upstream(mcp_node_modules, workspace), "broken": broken})
        with pytest.raises(UpstreamError) as e:
            await up.start()
        return up, e.value
    up, err = run(main())
    assert err.upstream == "broken"
    assert "MCP upstream broken did not start" in str(err)
    assert "Cannot find module" in str(err) and "Cannot find module" in err.stderr_tail
    assert up.pid("fs") is None  # the one that did start was stopped again


def test_configuration_errors(mcp_node_modules, workspace):
    bad_target = McpUpstreamConfig.model_validate({"stdio": {
        "command": ["/usr/bin/node"], "ro_binds": [{"host": str(mcp_node_modules), "path": "/tmp/nm"}]}})
    with pytest.raises(ConfigError, match="sandbox mount point"):
        Upstreams({"x": bad_target})
    http = McpUpstreamConfig.model_validate({"http": {"connector": "nope"}})
    with pytest.raises(ConfigError, match="connector 'nope' is not configured"):
        Upstreams({"x": http})
    conn = Connector(name="nope", base_url="http://127.0.0.1:9", allow=((frozenset({"GET"}), "/"),))
    with pytest.raises(ConfigError, match="does not allow POST /mcp"):
        Upstreams({"x": http}, connectors={"nope": conn})

    async def missing_workspace():
        cfg = filesystem_upstream(mcp_node_modules, workspace / "gone")
        with pytest.raises(UpstreamError, match="is not a directory"):
            await Upstreams({"fs": cfg}).start()
    run(missing_workspace())


def test_the_command_line_carries_no_service_environment(mcp_node_modules, workspace, monkeypatch):
    monkeypatch.setenv("AECL_TEST_CANARY", "service-secret")
    cfg = filesystem_upstream(mcp_node_modules, workspace, env={"X": "1"}).stdio
    argv = stdio_argv("/usr/bin/bwrap", "fs", cfg, load_profile(DEFAULT_PROFILE), "mcpsbx_00")
    joined = "\0".join(argv)
    assert "service-secret" not in joined
    for flag in ["--unshare-all", "--clearenv", "--die-with-parent", "--cap-drop"]:
        assert flag in argv
    assert argv[argv.index("--bind") + 1:argv.index("--bind") + 3] == [str(workspace), "/workspace"]
    assert ["--ro-bind", str(mcp_node_modules), "/opt/mcp/node_modules"] == \
        argv[argv.index(str(mcp_node_modules)) - 1:argv.index(str(mcp_node_modules)) + 2]
    assert argv[-3:] == list(cfg.command)


# -- a Streamable HTTP upstream through a connector ----------------------------------

@pytest.fixture
def sdk_http_server():
    """A real MCP server (the official Python SDK, Streamable HTTP, uvicorn)
    whose `whoami` tool answers with the Authorization header it got."""
    import uvicorn
    from mcp.server import Server
    from mcp.shared.exceptions import MCPError
    from mcp.types import CallToolResult, ListToolsResult, TextContent, Tool
    from starlette.applications import Starlette
    from starlette.routing import Mount

    async def list_tools(ctx, params):
        return ListToolsResult(tools=[Tool(name="whoami", input_schema={"type": "object"})])

    async def call_tool(ctx, params):
        if params.name != "whoami":
            raise MCPError(code=-32602, message=f"Unknown tool: {params.name}")
        seen = ctx.request.headers.get("authorization", "") if ctx.request is not None else "no request"
        return CallToolResult(content=[TextContent(type="text", text=seen)])

    server = Server("upstream-test", version="0.1", on_list_tools=list_tools, on_call_tool=call_tool)
    mcp_app = server.streamable_http_app()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with server.session_manager.run():
            yield

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(Starlette(routes=[Mount("/", app=mcp_app)], lifespan=lifespan),
                                       host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=uv.run, daemon=True)
    t.start()
    for _ in range(int(BOUND_S / 0.05)):
        if uv.started:
            break
        threading.Event().wait(0.05)
    else:
        pytest.fail("the test MCP server did not start")
    def stop() -> None:
        uv.should_exit = True
        t.join(timeout=BOUND_S)

    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", stop=stop)
    finally:
        stop()


def test_http_upstream_sends_the_connectors_credential(sdk_http_server):
    conn = Connector(name="tools-http", base_url=sdk_http_server.url, header="Authorization", secret="s3cret-value",
                     allow=((frozenset({"POST", "GET", "DELETE"}), "/mcp"),))
    cfg = McpUpstreamConfig.model_validate({"http": {"connector": "tools-http"}})

    async def main():
        async with running({"remote": cfg}, connectors={"tools-http": conn}) as up:
            assert [t.name for t in await up.list_tools("remote")] == ["whoami"]
            assert up.pid("remote") is None and up.sandbox_id("remote").startswith("mcpconn_")
            # A JSON-RPC error from the server comes back as a tool error.
            bad = await up.call("remote", "nope", {})
            assert bad.is_error and text(bad) == "MCP error -32602: Unknown tool: nope"
            r = await up.call("remote", "whoami", {})
            assert not r.is_error
            return text(r)
    assert run(main()) == "Bearer s3cret-value"


def test_http_upstream_that_goes_away(sdk_http_server):
    conn = Connector(name="tools-http", base_url=sdk_http_server.url, allow=((frozenset({"POST", "GET", "DELETE"}), "/mcp"),))
    cfg = McpUpstreamConfig.model_validate({"http": {"connector": "tools-http"}})

    async def main():
        async with running({"remote": cfg}, connectors={"tools-http": conn}) as up:
            assert not (await up.call("remote", "whoami", {})).is_error
            await asyncio.to_thread(sdk_http_server.stop)
            with pytest.raises(UpstreamError):
                await up.call("remote", "whoami", {}, timeout_s=5)
    run(main())
