"""The MCP servers behind the gateway (config `mcp.upstreams`), each held
open for the service's life by one supervisor task.

- stdio: AECL launches the server's command inside bubblewrap with its own
  profile (`stdio_argv`): every namespace unshared (no network at all, not
  even the host's loopback), read-only /usr (the sandbox profile's binds and
  symlinks), the config's read-only binds (the server's code), the declared
  workspace read-write at /workspace, a size-capped tmpfs at /tmp, a
  read-only root, nothing of the service's environment (--clearenv, then the
  profile's env and the config's), uid 65534 without capabilities, killed
  with the service (--die-with-parent), and per-process rlimits through
  prlimit(1) (data segment = memory_bytes, open files, file size). The
  server's stderr is kept in a bounded buffer (and logged at debug) for
  error messages.
- http: a Streamable HTTP server at the connector's base_url + path, with
  the connector's credential header added by AECL. Nothing from the MCP
  client ever reaches the upstream's headers (no token passthrough).

One supervisor task per upstream enters and exits its `mcp.Client` (anyio
requires a context manager to be left in the task that entered it); calls
from any task use the open client. When a call loses the connection (the
process died: MCPError -32000) or times out, it raises UpstreamError and
asks the supervisor to restart: the supervisor kills what is left of the
sandbox, leaves the client, and launches a new process (a new sandbox_id and
pid), so the next call works. A process that dies between calls is noticed
through a pidfd and restarted the same way. Restarts back off while they
keep failing; calls wait for a restart up to their timeout.

The upstream Client is made without list_roots_callback (server-filesystem
would replace its allowed directories with the client's roots), without
elicitation or sampling callbacks, and without a response cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enforcer.errors import ConfigError, SandboxError
from enforcer.sandbox.profile import DEFAULT_PROFILE, SandboxProfile, load_profile

if TYPE_CHECKING:
    import mcp.types

    from enforcer.config import McpHttpUpstream, McpStdioUpstream, McpUpstreamConfig
    from enforcer.connectors.proxy import Connector

log = logging.getLogger(__name__)

SANDBOX_WORKSPACE = "/workspace"
SANDBOX_HOSTNAME = "aecl-mcp"
PRLIMIT = "/usr/bin/prlimit"
# Where a configured read-only bind may not go: the sandbox's own mounts.
RESERVED_TARGETS = ("/proc", "/dev", "/tmp", SANDBOX_WORKSPACE)
# Lines and bytes of an upstream's stderr kept for error messages.
STDERR_LINES = 50
STDERR_LINE_BYTES = 1000
# How long the first connection (launch, handshake, tools/list) may take.
START_TIMEOUT_S = 30.0
# Restart back-off while restarts keep failing: first, cap.
RESTART_BACKOFF_S = (0.2, 10.0)
# Past the call's own read timeout, a backstop for anything it does not cover.
CALL_BACKSTOP_S = 5.0
HTTP_CONNECT_TIMEOUT_S = 30.0
HTTP_READ_TIMEOUT_S = 300.0  # a server may hold a response stream open
CONNECTION_CLOSED = -32000   # mcp_types.CONNECTION_CLOSED
REQUEST_TIMEOUT = -32001     # mcp_types.REQUEST_TIMEOUT


class UpstreamError(SandboxError):
    """An upstream MCP server could not be started or reached, lost its
    connection, or did not answer in time. `upstream` names it;
    `stderr_tail` holds the last lines the server wrote (stdio), for the
    operator's log, not for the MCP client."""

    code = "mcp_upstream_unavailable"

    def __init__(self, upstream: str, message: str, *, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.upstream = upstream
        self.stderr_tail = stderr_tail


def new_sandbox_id() -> str:
    return "mcpsbx_" + secrets.token_hex(16)


def _check_target(name: str, host: str, target: str) -> None:
    if not target.startswith("/") or os.path.normpath(target) != target.rstrip("/") or target == "/":
        raise ConfigError(f"mcp upstream {name}: ro_binds {host} -> {target!r}: the sandbox path must be "
                          "absolute and normalised, and not /")
    for reserved in RESERVED_TARGETS:
        if target == reserved or target.startswith(reserved + "/"):
            raise ConfigError(f"mcp upstream {name}: ro_binds {host} -> {target}: {reserved} is a sandbox mount point")
    if not host.startswith("/"):
        raise ConfigError(f"mcp upstream {name}: ro_binds {host!r}: the host path must be absolute")


def stdio_argv(bwrap: str, name: str, cfg: McpStdioUpstream, profile: SandboxProfile, sandbox_id: str) -> list[str]:
    """The bubblewrap command line of one launch of a stdio upstream. Pure
    but for checking which host paths exist. Nothing secret goes on it (it
    is readable in the sandbox's /proc/1/cmdline)."""
    argv = [
        bwrap,
        "--unshare-all",        # user, ipc, pid, net, uts, cgroup: no network, not even the host's loopback
        "--unshare-user",
        "--disable-userns",     # no nested user namespace
        "--uid", str(profile.uid),
        "--gid", str(profile.gid),
        "--cap-drop", "ALL",
        "--new-session",        # no controlling terminal (TIOCSTI)
        "--die-with-parent",
        "--hostname", SANDBOX_HOSTNAME,
        # A no-op (the variable is never set and --clearenv follows) that names
        # this launch on bwrap's command line: how Upstreams finds the outer
        # bwrap's pid, which the SDK's stdio transport does not expose.
        "--unsetenv", _marker(sandbox_id),
    ]
    for path in profile.ro_binds:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    for link, target in sorted(profile.symlinks.items()):
        argv += ["--symlink", target, link]
    for bind in sorted(cfg.ro_binds, key=lambda b: b.path):
        _check_target(name, str(bind.host), bind.path)
        argv += ["--ro-bind", str(bind.host), bind.path]
    if cfg.workspace is not None:
        argv += ["--bind", str(cfg.workspace), SANDBOX_WORKSPACE]
    argv += [
        "--proc", "/proc", "--remount-ro", "/proc",
        "--dev", "/dev",
        "--size", str(profile.shm_size_bytes), "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--size", str(profile.tmpfs_size_bytes), "--tmpfs", "/tmp",
        "--remount-ro", "/",    # the workspace and /tmp are the only writable places
        "--clearenv",
    ]
    env = dict(profile.env)
    if cfg.workspace is not None:
        env["HOME"] = SANDBOX_WORKSPACE
    env.update(cfg.env)
    for k, v in sorted(env.items()):
        argv += ["--setenv", k, v]
    argv += ["--chdir", SANDBOX_WORKSPACE if cfg.workspace is not None else "/tmp", "--"]
    if any(PRLIMIT == p or PRLIMIT.startswith(p.rstrip("/") + "/") for p in profile.ro_binds) \
            and os.path.exists(PRLIMIT):
        # Per-process limits on the server (it is one process). RLIMIT_DATA,
        # not RLIMIT_AS: node reserves far more address space than it uses.
        lim = profile.limits
        argv += [PRLIMIT, f"--data={cfg.memory_bytes}"]
        if lim.open_files is not None:
            argv.append(f"--nofile={lim.open_files}")
        if lim.file_size_bytes is not None:
            argv.append(f"--fsize={lim.file_size_bytes}")
        argv.append("--")
    return argv + list(cfg.command)


def _marker(sandbox_id: str) -> str:
    return "AECL_MCP_SANDBOX_" + sandbox_id


def _find_child(marker: str) -> int | None:
    """The pid of this process's child whose command line holds `marker`."""
    me = os.getpid()
    want = marker.encode()
    with os.scandir("/proc") as it:
        entries = [e.name for e in it if e.name.isdigit()]
    for name in entries:
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            if ppid != me:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if want in f.read().split(b"\0"):
                    return int(name)
        except (OSError, ValueError, IndexError):
            continue
    return None


@dataclass(eq=False)
class _Upstream:
    name: str
    stdio: McpStdioUpstream | None
    http: McpHttpUpstream | None
    call_timeout_s: float
    client: Any = None                       # mcp.Client while connected
    tools: list | None = None                # from the last connection's tools/list
    generation: int = 0                      # bumped on every connection
    sandbox_id: str | None = None
    pid: int | None = None
    pidfd: int | None = None
    last_error: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)    # first connection made, or failed
    restart: asyncio.Event = field(default_factory=asyncio.Event)
    kill_on_restart: bool = False
    task: asyncio.Task | None = None
    stderr: deque = field(default_factory=lambda: deque(maxlen=STDERR_LINES))

    def stderr_tail(self, lines: int = STDERR_LINES) -> str:
        return "\n".join(list(self.stderr)[-lines:])


class Upstreams:
    """The configured upstream MCP servers (name -> McpUpstreamConfig).
    `connectors` (enforcer.connectors.proxy.load_connectors) serve the http
    upstreams; `profile` is the sandbox profile the stdio upstreams start
    from (default: the shipped one)."""

    def __init__(self, configs: Mapping[str, McpUpstreamConfig], *,
                 connectors: Mapping[str, Connector] | None = None,
                 bwrap: str = "/usr/bin/bwrap",
                 profile: SandboxProfile | None = None,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self._bwrap = bwrap
        self._profile = profile if profile is not None else load_profile(DEFAULT_PROFILE)
        self._connectors = dict(connectors or {})
        self._start_timeout_s = start_timeout_s
        self._stopping = False
        self._stopped = asyncio.Event()
        self._ups: dict[str, _Upstream] = {}
        for name, cfg in configs.items():
            if cfg.stdio is not None:
                for bind in cfg.stdio.ro_binds:
                    _check_target(name, str(bind.host), bind.path)
                timeout = cfg.stdio.call_timeout_s
            else:
                assert cfg.http is not None
                conn = self._connectors.get(cfg.http.connector)
                if conn is None:
                    raise ConfigError(f"mcp upstream {name}: connector {cfg.http.connector!r} is not configured")
                if not conn.allows("POST", cfg.http.path):
                    raise ConfigError(f"mcp upstream {name}: connector {conn.name} does not allow POST "
                                      f"{cfg.http.path} (add it to the connector's allow list)")
                timeout = cfg.http.call_timeout_s
            self._ups[name] = _Upstream(name, cfg.stdio, cfg.http, timeout)

    # -- the public API ----------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._ups)

    async def start(self) -> None:
        """Launch every upstream and wait until each has answered tools/list
        once. Raises UpstreamError naming the first that did not (all are
        stopped then)."""
        if self._stopping:
            raise RuntimeError("Upstreams cannot be restarted once stopped")
        for u in self._ups.values():
            if u.stdio is not None:
                self._check_stdio_paths(u)
        for u in self._ups.values():
            if u.task is None:
                u.task = asyncio.create_task(self._supervise(u), name=f"mcp-upstream-{u.name}")
        try:
            await asyncio.gather(*(u.started.wait() for u in self._ups.values()))
        except BaseException:
            await self.stop()
            raise
        failed = [u for u in self._ups.values() if not u.ready.is_set() and u.tools is None]
        if failed:
            u = failed[0]
            tail = u.stderr_tail(10)
            await self.stop()
            raise UpstreamError(u.name, f"MCP upstream {u.name} did not start: {u.last_error}"
                                + (f"; its stderr ends: {tail}" if tail else ""), stderr_tail=tail)

    async def stop(self) -> None:
        """Stop every upstream (stdio: stdin closed, then killed if it lingers)."""
        self._stopping = True
        self._stopped.set()
        tasks = [u.task for u in self._ups.values() if u.task is not None]
        for u in self._ups.values():
            u.restart.set()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=10.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for u in self._ups.values():
            u.task = None

    async def list_tools(self, upstream: str) -> list[mcp.types.Tool]:
        """The upstream's tools as listed at its last (re)start."""
        u = self._get(upstream)
        if u.tools is None:
            await self._ready(u, u.call_timeout_s, "tools/list")
        assert u.tools is not None
        return list(u.tools)

    def call_timeout(self, upstream: str) -> float:
        """The upstream's configured call_timeout_s."""
        return self._get(upstream).call_timeout_s

    async def call(self, upstream: str, tool: str, arguments: dict, *,
                   timeout_s: float | None = None) -> mcp.types.CallToolResult:
        """Forward tools/call. A tool's own failure is the result's is_error;
        so is a JSON-RPC error the server answers with (text "MCP error
        <code>: <message>"). A lost connection, or no answer within
        timeout_s (default: the upstream's call_timeout_s), raises
        UpstreamError and restarts the upstream."""
        from mcp.shared.exceptions import MCPError
        from pydantic import ValidationError

        u = self._get(upstream)
        timeout = timeout_s if timeout_s is not None else u.call_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        client, gen = await self._ready(u, timeout, f"tools/call {tool}")
        left = max(deadline - loop.time(), 0.001)
        try:
            async with asyncio.timeout(left + CALL_BACKSTOP_S):
                return await client.call_tool(tool, arguments, read_timeout_seconds=left)
        except MCPError as e:
            if e.error.code == CONNECTION_CLOSED:
                why = "the connection to it was lost" + (" (its process exited)" if u.stdio is not None else "")
                raise self._lost(u, gen, tool, why) from None
            if e.error.code == REQUEST_TIMEOUT:
                raise self._lost(u, gen, tool, f"it did not answer within {timeout:g}s", kill=True) from None
            # The server answered with a JSON-RPC error: the call failed, and
            # definitely (unlike a lost connection). Given as a tool error,
            # the way the npm servers answer an unknown tool or bad arguments.
            from mcp.types import CallToolResult, TextContent

            answer = f"MCP error {e.error.code}: {e.error.message}"
            return CallToolResult(content=[TextContent(type="text", text=answer)], is_error=True)
        except TimeoutError:
            raise self._lost(u, gen, tool, f"it did not answer within {timeout:g}s", kill=True) from None
        except ValidationError as e:
            raise UpstreamError(u.name, f"MCP upstream {u.name}: tools/call {tool}: the answer is not a valid "
                                f"CallToolResult ({e.error_count()} errors)") from None
        except Exception as e:
            if _is_closed(e):
                raise self._lost(u, gen, tool, "the connection to it is closed") from None
            raise

    def sandbox_id(self, upstream: str) -> str:
        """The id of the upstream's current (or last) launch: mcpsbx_<hex>
        for a stdio sandbox, mcpconn_<hex> for an http connection; a new one
        after each restart."""
        sid = self._get(upstream).sandbox_id
        if sid is None:
            raise UpstreamError(upstream, f"MCP upstream {upstream} has not been started")
        return sid

    def pid(self, upstream: str) -> int | None:
        """The outer bwrap's pid of a running stdio upstream; None for http
        or when no process runs."""
        return self._get(upstream).pid

    # -- internals ---------------------------------------------------------

    def _get(self, upstream: str) -> _Upstream:
        try:
            return self._ups[upstream]
        except KeyError:
            raise UpstreamError(upstream, f"no MCP upstream named {upstream!r}") from None

    def _check_stdio_paths(self, u: _Upstream) -> None:
        assert u.stdio is not None
        for bind in u.stdio.ro_binds:
            if not os.path.exists(bind.host):
                raise UpstreamError(u.name, f"MCP upstream {u.name}: read-only bind {bind.host} does not exist")
        if u.stdio.workspace is not None and not Path(u.stdio.workspace).is_dir():
            raise UpstreamError(u.name, f"MCP upstream {u.name}: workspace {u.stdio.workspace} is not a directory")
        if not os.access(self._bwrap, os.X_OK):
            raise UpstreamError(u.name, f"MCP upstream {u.name}: bubblewrap ({self._bwrap}) is not installed")

    async def _ready(self, u: _Upstream, timeout: float, what: str) -> tuple[Any, int]:
        if not u.ready.is_set():
            if u.task is None:
                raise UpstreamError(u.name, f"MCP upstream {u.name} is not running (Upstreams.start was not called "
                                    "or it was stopped)")
            try:
                async with asyncio.timeout(timeout):
                    await u.ready.wait()
            except TimeoutError:
                why = f" (last failure: {u.last_error})" if u.last_error else ""
                raise UpstreamError(u.name, f"MCP upstream {u.name} is restarting and was not back within "
                                    f"{timeout:g}s for {what}{why}", stderr_tail=u.stderr_tail(10)) from None
        return u.client, u.generation

    def _lost(self, u: _Upstream, gen: int, tool: str, why: str, *, kill: bool = False) -> UpstreamError:
        sid = u.sandbox_id
        if u.generation == gen and u.ready.is_set():
            u.ready.clear()   # now: the next call waits for the new process, not this client
            u.kill_on_restart = kill
            u.restart.set()
        tail = u.stderr_tail(10)
        log.warning("MCP upstream %s (%s): tools/call %s failed: %s; restarting it%s", u.name, sid, tool, why,
                    f"; stderr ends: {tail}" if tail else "")
        return UpstreamError(u.name, f"MCP upstream {u.name}: tools/call {tool} failed: {why}. The upstream is "
                             "being restarted; the call may or may not have taken effect: check before retrying.",
                             stderr_tail=tail)

    async def _supervise(self, u: _Upstream) -> None:
        failures = 0
        while not self._stopping:
            gone: asyncio.Future = asyncio.get_running_loop().create_future()
            try:
                async with self._connect(u, gone) as client:
                    tools = await asyncio.wait_for(_list_all(client), timeout=self._start_timeout_s)
                    u.tools, u.client = tools, client
                    u.generation += 1
                    u.last_error = None
                    failures = 0
                    u.ready.set()
                    u.started.set()
                    log.info("MCP upstream %s: %s, %d tools (%s)", u.name,
                             f"sandbox {u.sandbox_id} pid {u.pid}" if u.stdio else f"connection {u.sandbox_id}",
                             len(tools), client.protocol_version)
                    restart = asyncio.ensure_future(u.restart.wait())
                    try:
                        await asyncio.wait([restart, gone], return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        restart.cancel()
                    u.ready.clear()
                    if gone.done() and not self._stopping:
                        log.warning("MCP upstream %s: its process (sandbox %s) exited; restarting it",
                                    u.name, u.sandbox_id)
                    if u.kill_on_restart:
                        self._kill(u)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - every launch failure is reported, then retried
                u.last_error = _describe(e)
                failures += 1
                if not self._stopping:
                    log.warning("MCP upstream %s: launch %s failed: %s", u.name, u.sandbox_id, u.last_error)
            finally:
                u.ready.clear()
                u.client = None
                u.pid = None
                u.kill_on_restart = False
                u.restart.clear()
            if not u.started.is_set():   # the first launch failed: start() reports it
                u.started.set()
                return
            if failures:   # back off, but not past stop()
                delay = min(RESTART_BACKOFF_S[0] * 2 ** (failures - 1), RESTART_BACKOFF_S[1])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), delay)

    def _kill(self, u: _Upstream) -> None:
        if u.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(u.pidfd, signal.SIGKILL)

    @contextlib.asynccontextmanager
    async def _connect(self, u: _Upstream, gone: asyncio.Future) -> AsyncIterator[Any]:
        from mcp import Client

        if u.stdio is not None:
            u.sandbox_id = new_sandbox_id()
            async with self._stdio_transport(u, gone) as transport, \
                    Client(_Entered(transport), cache=None) as client:
                yield client
        else:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            assert u.http is not None
            u.sandbox_id = "mcpconn_" + secrets.token_hex(16)
            conn = self._connectors[u.http.connector]
            headers = {}
            value = conn.credential_value()
            if conn.header is not None and value is not None:
                headers[conn.header] = value
            url = conn.base_url.rstrip("/") + u.http.path
            timeout = httpx2.Timeout(HTTP_CONNECT_TIMEOUT_S, read=HTTP_READ_TIMEOUT_S)
            async with httpx2.AsyncClient(headers=headers, timeout=timeout, trust_env=False) as http, \
                    Client(streamable_http_client(url, http_client=http), cache=None) as client:
                yield client

    @contextlib.asynccontextmanager
    async def _stdio_transport(self, u: _Upstream, gone: asyncio.Future) -> AsyncIterator[Any]:
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        assert u.stdio is not None and u.sandbox_id is not None
        argv = stdio_argv(self._bwrap, u.name, u.stdio, self._profile, u.sandbox_id)
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        os.set_blocking(r, False)
        reader = _StderrReader(u, r)
        loop.add_reader(r, reader.on_readable)
        errlog = os.fdopen(w, "w")  # closed below, once the child holds it
        try:
            params = StdioServerParameters(command=argv[0], args=argv[1:], env={})
            async with stdio_client(params, errlog=errlog) as streams:
                errlog.close()
                u.pid = _find_child(_marker(u.sandbox_id))
                if u.pid is not None:
                    try:
                        u.pidfd = os.pidfd_open(u.pid)
                    except OSError:
                        u.pidfd = None
                    else:
                        pidfd = u.pidfd

                        def exited() -> None:   # a pidfd turns readable when its process ends
                            loop.remove_reader(pidfd)
                            if not gone.done():
                                gone.set_result(None)

                        loop.add_reader(pidfd, exited)
                try:
                    yield streams
                finally:
                    if u.pidfd is not None:
                        loop.remove_reader(u.pidfd)
                        os.close(u.pidfd)
                        u.pidfd = None
        finally:
            if not errlog.closed:
                errlog.close()
            reader.close(loop)


class _Entered:
    """An already-entered transport's streams as a Transport (Client enters
    its transport; ours is entered by the supervisor, which owns the pipes)."""

    def __init__(self, streams: Any) -> None:
        self._streams = streams

    async def __aenter__(self) -> Any:
        return self._streams

    async def __aexit__(self, *exc: object) -> None:
        return None


class _StderrReader:
    """The upstream's stderr, line by line, into its bounded buffer."""

    def __init__(self, u: _Upstream, fd: int) -> None:
        self.u, self.fd, self.partial, self.closed = u, fd, b"", False

    def on_readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._flush()
            asyncio.get_running_loop().remove_reader(self.fd)
            return
        *lines, self.partial = (self.partial + data).split(b"\n")
        if len(self.partial) > STDERR_LINE_BYTES:
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            self._add(line)

    def _add(self, line: bytes) -> None:
        text = line[:STDERR_LINE_BYTES].decode("utf-8", "replace").rstrip()
        if text:
            self.u.stderr.append(text)
            log.debug("MCP upstream %s stderr: %s", self.u.name, text)

    def _flush(self) -> None:
        if self.partial:
            self._add(self.partial)
            self.partial = b""

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.closed:
            return
        self.closed = True
        # What the process wrote last (often why it died) is still in the pipe.
        with contextlib.suppress(OSError):
            while chunk := os.read(self.fd, 65536):
                self.partial += chunk
                *lines, self.partial = self.partial.split(b"\n")
                for line in lines:
                    self._add(line)
        self._flush()
        loop.remove_reader(self.fd)
        os.close(self.fd)


async def _list_all(client: Any) -> list:
    tools: list = []
    cursor = None
    for _ in range(100):
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            return tools
    raise UpstreamError("", "tools/list did not end after 100 pages")


def _is_closed(e: BaseException) -> bool:
    try:
        import anyio
    except ImportError:  # pragma: no cover
        return False
    return isinstance(e, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream))


def _describe(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(_describe(x) for x in e.exceptions)
    if isinstance(e, TimeoutError):
        return "no answer to the MCP handshake and tools/list in time"
    code = getattr(getattr(e, "error", None), "code", None)
    if code == CONNECTION_CLOSED:
        return "the process exited before answering (MCP error -32000: Connection closed)"
    return f"{type(e).__name__}: {e}"
