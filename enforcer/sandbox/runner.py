"""Run one tool call under bubblewrap: JSON in on stdin, bounded output out,
resource limits on the whole sandbox, and timeouts after which the whole
process tree is killed.

Start-up of one sandbox:
  1. its cgroup is created (limits written) and a seccomp pipe prepared;
  2. bubblewrap starts with --info-fd and --block-fd: it builds the sandbox,
     reports the pid of its init (outside pid) and waits;
  3. the runner sets the rlimits on that init (prlimit) and moves it into the
     cgroup, off the event loop, then releases it: the tool and everything it
     forks start limited and inside the cgroup;
  4. the tool's exit is watched through a pidfd and reaped with wait4, which
     also gives its resource usage when no cgroup accounting is available.

With a release gate (run(..., release=...)) step 3 releases the tool only once
both the confinement is done and the gate (e.g. the fsync of the call's audit
entry) has succeeded; if the gate fails, the sandbox is killed unreleased.

A service-wide cap bounds the sandboxes alive at once: run() takes a slot
before starting bubblewrap and gives it back once the sandbox is reaped;
callers beyond the cap wait in arrival order, up to `max_waiting` of them.

Sandboxes are started from the event-loop thread, which lives as long as the
service: bubblewrap's --die-with-parent follows the parent *thread*, so a
sandbox started from a short-lived worker thread would die with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import resource
import signal
import stat
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from enforcer.errors import SandboxBusy, SandboxError
from enforcer.sandbox.bwrap import bwrap_argv
from enforcer.sandbox.cgroups import CgroupSupport, SandboxCgroup, Usage
from enforcer.sandbox.profile import ResourceLimits, SandboxOverrides, SandboxProfile
from enforcer.sandbox.seccomp import SeccompProgram, compile_filter

log = logging.getLogger(__name__)
_CHUNK = 64 << 10
# After a kill, how long to wait for the sandbox's pipes to close before
# giving up on them (they close at once unless something is badly wrong).
_DRAIN_AFTER_KILL_S = 5.0
WATCHDOG_INTERVAL_S = 0.5


@dataclass(frozen=True)
class SandboxResult:
    sandbox_id: str
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    output_truncated: bool
    duration_s: float
    # Whole-sandbox CPU time and peak memory: from the sandbox's cgroup where
    # there is one, else from wait4 (which misses processes killed with it).
    cpu_time_s: float | None = None
    peak_memory_bytes: int | None = None
    # Which limits stopped or cut the tool: timeout, lifetime, output,
    # memory, pids, cpu_time, file_size.
    limits_hit: tuple[str, ...] = ()


def rlimits_for(limits: ResourceLimits) -> list[tuple[int, tuple[int, int]]]:
    """(resource, (soft, hard)) for the sandbox, never above this process's
    own hard limits (an unprivileged service could not raise them)."""
    wanted = [(resource.RLIMIT_CORE, 0)]  # no core dumps: not into /tmp, not to a host helper
    if limits.cpu_seconds:
        wanted.append((resource.RLIMIT_CPU, limits.cpu_seconds))
    if limits.address_space_bytes:
        wanted.append((resource.RLIMIT_AS, limits.address_space_bytes))
    if limits.file_size_bytes:
        wanted.append((resource.RLIMIT_FSIZE, limits.file_size_bytes))
    if limits.open_files:
        wanted.append((resource.RLIMIT_NOFILE, limits.open_files))
    if limits.processes:
        wanted.append((resource.RLIMIT_NPROC, limits.processes))
    out = []
    for res, value in wanted:
        _, own_hard = resource.getrlimit(res)
        cap = value if own_hard == resource.RLIM_INFINITY else min(value, own_hard)
        # RLIMIT_CPU: SIGXCPU at the soft limit (catchable), SIGKILL a second later.
        hard = cap + 1 if res == resource.RLIMIT_CPU and (own_hard == resource.RLIM_INFINITY or cap < own_hard) else cap
        out.append((res, (cap, hard)))
    return out


class _Live:
    """One running sandbox, as the runner and its watchdog see it."""

    def __init__(self, sandbox_id: str, proc: subprocess.Popen, pidfd: int,
                 cgroup: SandboxCgroup | None, lifetime_deadline: float) -> None:
        self.sandbox_id = sandbox_id
        self.proc = proc
        self.pid = proc.pid
        self.pidfd = pidfd
        self.cgroup = cgroup
        self.lifetime_deadline = lifetime_deadline  # time.monotonic()
        self.init_pidfd: int | None = None  # bubblewrap's sandbox init, until released
        self.reason: str | None = None      # why it was killed, first reason wins
        self.setup_error: SandboxError | None = None
        self.frozen = False                 # held by the cgroup freezer until released
        self.reaped = False
        self.lock = threading.Lock()

    def kill(self, reason: str) -> None:
        with self.lock:
            if self.reason is None:
                self.reason = reason
            if self.reaped:
                return
            for fd in (self.pidfd, self.init_pidfd):
                if fd is not None:
                    try:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                    except (ProcessLookupError, OSError):
                        pass
            try:
                # bubblewrap's group (it started a session of its own); the
                # pid cannot have been recycled, bubblewrap is not reaped yet.
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.cgroup is not None:
            try:
                self.cgroup.kill()
            except OSError as e:
                log.warning("sandbox %s: cgroup kill failed: %s", self.sandbox_id, e)


_SANDBOX_ID = re.compile(r"sbx_[0-9a-f]{32}")


def new_sandbox_id() -> str:
    return "sbx_" + uuid.uuid4().hex


def _checked_id(sandbox_id: str) -> str:
    # It names a cgroup and is swept by its shape (cgroups.SANDBOX_DIR_RE).
    if not _SANDBOX_ID.fullmatch(sandbox_id):
        raise ValueError(f"sandbox id {sandbox_id!r} is not of the form sbx_<32 hex>")
    return sandbox_id


class _Slots:
    """A FIFO counting semaphore with a bounded queue. A freed slot is handed
    straight to the oldest waiter (never grabbed by a later arrival); a
    waiter cancelled before or after being handed a slot gives it on.
    Used from the event-loop thread only."""

    def __init__(self, limit: int, max_waiting: int) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        self.running = 0                      # slots held (or handed over, not yet resumed)
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        if len(self._waiters) >= self.max_waiting:
            raise SandboxBusy(f"sandbox.max_concurrent={self.limit} reached and {len(self._waiters)} callers "
                              f"already waiting (sandbox.max_waiting={self.max_waiting}): retry later")
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot, then cancelled: pass it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes to it: `running` unchanged
                return
        self.running -= 1


class BwrapRunner:
    """The bubblewrap backend. The interface a backend offers (enforcer.sandbox
    .backend.SandboxBackend): run(), kill_all(), describe()."""

    name = "bubblewrap"

    def __init__(self, bwrap: str, profile: SandboxProfile, max_output_bytes: int, *,
                 max_concurrent: int = 8, max_waiting: int = 64,
                 total_memory_bytes: int | None = None, total_pids: int | None = None) -> None:
        if not (os.path.isfile(bwrap) and os.access(bwrap, os.X_OK)):
            raise SandboxError(f"bubblewrap not found at {bwrap}: install the 'bubblewrap' package")
        if max_concurrent <= 0 or max_waiting < 0:
            raise ValueError(f"max_concurrent must be > 0 and max_waiting >= 0, not {max_concurrent}, {max_waiting}")
        for name, value in (("total_memory_bytes", total_memory_bytes), ("total_pids", total_pids)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 when set, not {value}")
        self.bwrap = bwrap
        self.profile = profile
        self.max_output_bytes = max_output_bytes
        self.seccomp: SeccompProgram | None = compile_filter() if profile.seccomp else None
        # For sandboxes with a connector socket: AF_INET/AF_INET6 allowed too,
        # for the bridge on the sandbox's own loopback (see compile_filter).
        self.seccomp_inet: SeccompProgram | None = compile_filter(allow_inet=True) if profile.seccomp else None
        self.rlimits = rlimits_for(profile.limits)
        self._slots = _Slots(max_concurrent, max_waiting)
        self._closing = False  # set by kill_all: no new sandbox starts after it
        # Limits on the aecl/ parent cgroup(s), written now (see cgroups.py).
        self.cgroups = CgroupSupport.detect(profile.limits, total_memory_bytes=total_memory_bytes,
                                            total_pids=total_pids)
        self._live: dict[str, _Live] = {}
        self._unremoved: list[SandboxCgroup] = []
        self._cleanups: set[asyncio.Task] = set()
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self._closed = threading.Event()
        if self.cgroups.enabled:
            # Sandboxes left behind by an earlier instance, past their lifetime.
            for sid in self.cgroups.sweep(time.time()):
                log.warning("killed sandbox %s left over past its lifetime", sid)
        log.info("sandbox: %s", self.describe())

    # -- what this machine allowed ------------------------------------------

    def describe(self) -> str:
        names = {resource.RLIMIT_CORE: "core", resource.RLIMIT_CPU: "cpu", resource.RLIMIT_AS: "as",
                 resource.RLIMIT_FSIZE: "fsize", resource.RLIMIT_NOFILE: "nofile", resource.RLIMIT_NPROC: "nproc"}
        rl = ", ".join(f"{names[r]}={soft}" for r, (soft, _) in self.rlimits)
        return "; ".join([
            f"{self.name} at {self.bwrap}",
            self.seccomp.describe() if self.seccomp else "seccomp OFF (profile)",
            f"rlimits {rl}",
            self.cgroups.describe(),
            f"scratch tmpfs {self.profile.tmpfs_size_bytes} bytes, lifetime {self.profile.lifetime_s:g} s",
            f"at most {self._slots.limit} sandboxes at once, {self._slots.max_waiting} callers waiting",
            "release gate held across a service crash (cgroup v2 freezer)" if self.cgroups.can_freeze else
            "release gate NOT held across a service crash (no cgroup v2 hierarchy to freeze sandboxes in)",
        ])

    @property
    def running(self) -> int:
        """Sandboxes holding a slot (starting, running or being reaped)."""
        return self._slots.running

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return self._slots.waiting

    @property
    def applied_limits(self) -> dict[str, str]:
        out = {"rlimits": "applied", "seccomp": "applied" if self.seccomp else "off"}
        out.update(self.cgroups.applied)
        return out

    # -- running --------------------------------------------------------------

    async def run(
        self, command: list[str], stdin: bytes, timeout_s: float, tools_dir: Path | None,
        *, sandbox: SandboxOverrides | None = None, release: Awaitable[object] | None = None,
        sandbox_id: str | None = None, connector_socket: Path | None = None,
    ) -> SandboxResult:
        """Run `command` in a new sandbox (see SandboxBackend.run).

        connector_socket: the execution's connector endpoint (a Unix socket
        from enforcer.connectors.ConnectorGateway.endpoint). The sandbox then
        reaches it at /run/aecl/connector.sock, the tool runs under the
        bridge (HTTP_PROXY=http://127.0.0.1:3128 inside), and the seccomp
        filter also allows AF_INET/AF_INET6 sockets (the network namespace
        still holds only the sandbox's own loopback). Without it nothing
        changes: AF_UNIX sockets only, no bridge.

        sandbox_id: the id to use (from new_sandbox_id()), so a caller that
        is cancelled still knows which sandbox its call had.

        release: when given, the sandbox is started and confined while it is
        pending, and the tool released only once both are done; if it fails
        (any exception, CancelledError included), the sandbox is killed
        unreleased, cleaned up, and that exception re-raised. A coroutine is
        run as a task of this call (cancelled if the call ends first); a
        future or task stays the caller's (never cancelled here). When the
        sandbox ends first (timeout, shutdown, bubblewrap failing), the tool
        never ran and the result says why, as without a gate.

        Raises SandboxBusy at once when max_concurrent sandboxes run and
        max_waiting callers already wait for a slot, or when no slot came
        free within timeout_s (the wait counts against the call's timeout)."""
        if connector_socket is not None:
            _check_connector_socket(connector_socket)  # before anything starts
        gate = asyncio.ensure_future(release) if release is not None else None
        entered = time.monotonic()
        try:
            left = timeout_s
            if not self._slots.try_acquire():
                try:
                    await asyncio.wait_for(self._slots.acquire(), timeout_s)
                except TimeoutError:
                    raise SandboxBusy(f"no sandbox slot came free within the call's timeout ({timeout_s:g} s): "
                                      f"sandbox.max_concurrent={self._slots.limit} reached") from None
                left = max(0.001, timeout_s - (time.monotonic() - entered))
            try:
                if gate is not None and gate.done() and (gate.cancelled() or gate.exception() is not None):
                    gate.result()  # failed already: no sandbox at all
                if self._closing:
                    # Queued for a slot while the service shut down: kill_all
                    # cannot reach a sandbox that does not exist yet.
                    raise SandboxError("not started: the service is shutting down")
                return await self._run(command, stdin, left, tools_dir, sandbox, gate,
                                       _checked_id(sandbox_id) if sandbox_id else new_sandbox_id(),
                                       connector_socket)
            finally:
                self._slots.release()
        finally:
            if gate is not None and gate is not release:  # ours
                if not gate.done():
                    gate.cancel()
                elif not gate.cancelled():
                    gate.exception()  # retrieved: its failure, if any, is ours to report

    async def _run(self, command: list[str], stdin: bytes, timeout_s: float, tools_dir: Path | None,
                   sandbox: SandboxOverrides | None, gate: asyncio.Future | None, sandbox_id: str,
                   connector_socket: Path | None = None) -> SandboxResult:
        loop = asyncio.get_running_loop()
        seccomp = self.seccomp_inet if connector_socket is not None else self.seccomp
        lifetime = self.profile.lifetime_s
        budget = min(timeout_s, lifetime)
        started = time.monotonic()
        cgroup_name = f"{sandbox_id}.{math.ceil(time.time() + lifetime)}"
        parent_fds: list[int] = []
        child_fds: list[int] = []
        try:
            if seccomp is not None:
                child_fds.append(seccomp.pipe())
            info_r, info_w = os.pipe2(os.O_CLOEXEC)
            parent_fds.append(info_r)
            child_fds.append(info_w)
            block_r, block_w = os.pipe2(os.O_CLOEXEC)
            parent_fds.append(block_w)
            child_fds.append(block_r)
            argv = bwrap_argv(
                self.bwrap, self.profile, command, tools_dir,
                tmpfs_size_bytes=sandbox.tmpfs_size_bytes if sandbox else None,
                extra_ro_binds=sandbox.ro_binds if sandbox else (),
                seccomp_fd=child_fds[0] if seccomp is not None else None,
                info_fd=info_w, block_fd=block_r,
                connector_socket=connector_socket,
            )
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                # bubblewrap gets only the profile's environment: with --clearenv alone
                # the service's environment would stay readable in /proc/1/environ.
                env=dict(self.profile.env),
                close_fds=True, pass_fds=tuple(child_fds),
                start_new_session=True,
            )
            pidfd = os.pidfd_open(proc.pid)
        except OSError as e:
            for fd in parent_fds:
                os.close(fd)
            raise SandboxError(f"cannot start bubblewrap: {e}") from e
        finally:
            for fd in child_fds:
                os.close(fd)
        live = _Live(sandbox_id, proc, pidfd, None, started + lifetime)
        with self._lock:
            self._live[sandbox_id] = live
        self._ensure_watchdog()

        stdin_fd, out_fd, err_fd = (_detach(proc.stdin), _detach(proc.stdout), _detach(proc.stderr))
        out = _Capture(self.max_output_bytes)
        err = _Capture(self.max_output_bytes)
        usage: tuple[int, object] | None = None

        def on_cap() -> None:
            live.kill("output")

        released = gate is None  # may the tool go (as far as the gate goes)

        async def setup() -> None:
            nonlocal released
            try:
                info = await _read_all(loop, info_r)
                pid = _child_pid(info)
                if pid is not None and live.reason is None:
                    fd = _pin_child(pid, proc.pid)
                    if fd is None:
                        live.kill("setup")  # never release an init we cannot account for
                        return
                    with live.lock:
                        live.init_pidfd = fd
                    try:
                        await loop.run_in_executor(None, self._confine, live, pid, fd, cgroup_name,
                                                   gate is not None)
                    except SandboxError as e:
                        live.setup_error = e
                        live.kill("setup")
                if gate is not None and live.reason is None:
                    # Confined; now the gate, unless the sandbox ends first.
                    await asyncio.wait((gate, exit_task), return_when=asyncio.FIRST_COMPLETED)
                    if gate.done():
                        if gate.cancelled() or gate.exception() is not None:
                            live.kill("release")
                        else:
                            released = True
            finally:
                os.close(info_r)
                if live.reason is None and not released:
                    # Closing the block pipe would release it as well.
                    live.kill("unreleased")
                if live.reason is None:
                    try:
                        os.write(block_w, b"\n")  # go
                    except OSError:
                        pass
                    if live.frozen:
                        try:
                            live.cgroup.freeze(False)
                            live.frozen = False
                        except OSError as e:
                            live.setup_error = SandboxError(f"cannot thaw the released sandbox: {e}")
                            live.kill("setup")
                os.close(block_w)
                with live.lock:
                    if live.init_pidfd is not None:
                        os.close(live.init_pidfd)
                        live.init_pidfd = None

        async def wait_exit() -> None:
            nonlocal usage
            fut = loop.create_future()

            def on_exit() -> None:
                with live.lock:
                    try:
                        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                    except ChildProcessError:  # reaped elsewhere: status unknown
                        pid, status, ru = proc.pid, 255 << 8, None
                    if pid == 0:
                        return
                    live.reaped = True
                    proc.returncode = os.waitstatus_to_exitcode(status)
                loop.remove_reader(pidfd)
                if not fut.done():
                    fut.set_result((status, ru))

            loop.add_reader(pidfd, on_exit)
            try:
                usage = await fut
            finally:
                loop.remove_reader(pidfd)

        exit_task = asyncio.ensure_future(wait_exit())
        tasks = [
            asyncio.ensure_future(setup()),
            asyncio.ensure_future(_feed(loop, stdin_fd, stdin)),
            asyncio.ensure_future(_pump(loop, out_fd, out, on_cap)),
            asyncio.ensure_future(_pump(loop, err_fd, err, on_cap)),
            exit_task,
        ]
        # Done when bubblewrap is reaped and both pipes are closed; a task's
        # error does not cut the others short.
        everything = asyncio.gather(*tasks, return_exceptions=True)
        try:
            try:
                await asyncio.wait_for(asyncio.shield(everything), budget)
            except asyncio.TimeoutError:
                live.kill("timeout" if budget < lifetime else "lifetime")
                await self._drain(everything, tasks, live)
        except asyncio.CancelledError:
            live.kill("cancelled")
            await asyncio.shield(self._drain(everything, tasks, live))
            raise
        finally:
            with self._lock:
                self._live.pop(sandbox_id, None)
            os.close(pidfd)
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    log.error("sandbox %s: %r", sandbox_id, t.exception())
            cg_usage = self._finish_cgroup(live)
        if gate is not None and not released and gate.done():
            gate.result()  # the gate failed: its own exception, the tool never ran
        if live.setup_error is not None:
            raise SandboxError(f"sandbox {sandbox_id}: {live.setup_error}") from live.setup_error
        rc = proc.returncode
        return self._result(live, rc, out, err, time.monotonic() - started, usage, cg_usage)

    def _confine(self, live: _Live, pid: int, pidfd: int, cgroup_name: str, hold: bool = False) -> None:
        """Off the event loop, while bubblewrap builds the sandbox (moving a
        process between cgroups can wait for an RCU grace period): rlimits on
        the sandbox's init, then its cgroup. The init is pinned by a pidfd;
        that it is still alive afterwards proves the pid named it throughout.

        hold (a release gate pending): also freeze the sandbox's cgroup. Were
        the service to die before the release, end-of-file on the block pipe
        would let the tool run; frozen, it stays stopped (until the next
        instance's sweep kills it at its deadline)."""
        try:
            for res, lim in self.rlimits:
                resource.prlimit(pid, res, lim)
            if self.cgroups.enabled:
                live.cgroup = self.cgroups.create(cgroup_name)
                live.cgroup.attach(pid)
                if hold:
                    live.frozen = live.cgroup.freeze(True)
            signal.pidfd_send_signal(pidfd, 0)
        except ProcessLookupError:
            live.kill("setup")  # bubblewrap failed during setup; its exit status and stderr say why
        except OSError as e:
            raise SandboxError(f"cannot apply resource limits: {e}") from e

    async def _drain(self, everything: asyncio.Future, tasks: list[asyncio.Task], live: _Live) -> None:
        """After a kill: let the pipes close and bubblewrap be reaped; never
        hang on a pipe that something outside the kill still holds."""
        try:
            await asyncio.wait_for(asyncio.shield(everything), _DRAIN_AFTER_KILL_S)
        except asyncio.TimeoutError:
            log.error("sandbox %s: still not done %.0f s after SIGKILL", live.sandbox_id, _DRAIN_AFTER_KILL_S)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _finish_cgroup(self, live: _Live) -> Usage | None:
        """Read the sandbox's usage, then remove its cgroup in the background:
        bubblewrap's sandbox init may outlive the reaped bubblewrap by a moment."""
        cg = live.cgroup
        if cg is None:
            return None
        usage = cg.usage()
        task = asyncio.ensure_future(self._remove_later(cg))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return usage

    async def _remove_later(self, cg: SandboxCgroup) -> None:
        try:
            for delay in (0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
                await asyncio.sleep(delay)
                if delay:
                    cg.kill()  # anything still there (normally nothing)
                if cg.remove():
                    return
        except asyncio.CancelledError:
            pass
        with self._lock:  # the watchdog keeps trying
            self._unremoved.append(cg)
        self._ensure_watchdog()

    def _result(self, live: _Live, rc: int | None, out: _Capture, err: _Capture, duration: float,
                waited: tuple[int, object] | None, cg: Usage | None) -> SandboxResult:
        cpu = peak = None
        if waited is not None:
            ru = waited[1]
            cpu = ru.ru_utime + ru.ru_stime
            peak = ru.ru_maxrss * 1024
        if cg is not None:
            cpu = cg.cpu_time_s if cg.cpu_time_s is not None else cpu
            peak = cg.peak_memory_bytes if cg.peak_memory_bytes is not None else peak
        hits: list[str] = []
        if live.reason in ("timeout", "lifetime", "shutdown"):
            hits.append(live.reason)
        if out.truncated or err.truncated:
            hits.append("output")
        if cg is not None and cg.oom_kills:
            hits.append("memory")
        if cg is not None and cg.pids_max_hits:
            hits.append("pids")
        if rc == 128 + signal.SIGXCPU or rc == -signal.SIGXCPU:
            hits.append("cpu_time")
        if rc == 128 + signal.SIGXFSZ or rc == -signal.SIGXFSZ:
            hits.append("file_size")
        return SandboxResult(
            sandbox_id=live.sandbox_id,
            exit_code=rc if rc is not None and rc >= 0 else None,
            signal=-rc if rc is not None and rc < 0 else None,
            stdout=bytes(out.buf),
            stderr=bytes(err.buf),
            timed_out=live.reason in ("timeout", "lifetime"),
            output_truncated=out.truncated or err.truncated,
            duration_s=duration,
            cpu_time_s=round(cpu, 6) if cpu is not None else None,
            peak_memory_bytes=peak,
            limits_hit=tuple(hits),
        )

    # -- lifetime kill switch and shutdown -------------------------------------

    def kill_all(self) -> None:
        """Service shutdown: every running sandbox is killed (each interrupted
        call then completes as failed)."""
        self._closing = True
        with self._lock:
            live = list(self._live.values())
        for sb in live:
            sb.kill("shutdown")

    def close(self) -> None:
        self.kill_all()
        self._closed.set()

    def _ensure_watchdog(self) -> None:
        with self._lock:
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(target=self._watch, name="aecl-sandbox-watchdog", daemon=True)
                self._watchdog.start()

    def _watch(self) -> None:
        """The lifetime kill switch, on a thread of its own so that a stuck
        event loop cannot hold it up. It kills (a) every sandbox the runner
        knows past its lifetime and (b) from the kernel's view, every sandbox
        cgroup whose deadline (in its name) has passed, whoever started it."""
        while not self._closed.wait(WATCHDOG_INTERVAL_S):
            now = time.monotonic()
            with self._lock:
                live = list(self._live.values())
                unremoved, self._unremoved = self._unremoved, []
            for sb in live:
                if now >= sb.lifetime_deadline:
                    log.warning("sandbox %s reached its lifetime (%g s): killed", sb.sandbox_id, self.profile.lifetime_s)
                    sb.kill("lifetime")
            if self.cgroups.enabled:
                for sid in self.cgroups.sweep(time.time()):
                    log.warning("sandbox %s outlived its lifetime unnoticed by the runner: killed", sid)
            still = []
            for cg in unremoved:
                cg.kill()
                if not cg.remove():
                    still.append(cg)
            with self._lock:
                self._unremoved.extend(still)
                if not self._live and not self._unremoved and not self._cgroups_left():
                    self._watchdog = None
                    return

    def _cgroups_left(self) -> bool:
        for h in self.cgroups.hierarchies:
            try:
                if any(n.startswith("sbx_") for n in os.listdir(h.base)):
                    return True
            except OSError:
                pass
        return False


class _Capture:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.truncated = False


def _detach(f) -> int:
    fd = os.dup(f.fileno())
    f.close()
    os.set_blocking(fd, False)
    return fd


async def _pump(loop: asyncio.AbstractEventLoop, fd: int, cap: _Capture, on_cap: Callable[[], None]) -> None:
    """Read a sandbox pipe into a capped buffer; past the cap, kill the
    sandbox and stop reading: output is never buffered unbounded."""
    done = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            room = cap.cap - len(cap.buf)
            if len(chunk) <= room:
                cap.buf += chunk
                return
            cap.buf += chunk[:room]
            cap.truncated = True
            on_cap()
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _feed(loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
                try:
                    await ready
                finally:
                    loop.remove_writer(fd)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the tool did not read its input; its exit status tells the rest
    finally:
        os.close(fd)


async def _read_all(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    os.set_blocking(fd, False)
    buf = bytearray()
    done = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk and len(buf) < 65536:
            buf.extend(chunk)
            return
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return bytes(buf)


def _check_connector_socket(path: Path) -> None:
    """The connector endpoint must be an existing Unix socket given by an
    absolute path (bubblewrap binds it by that path)."""
    if not os.path.isabs(path):
        raise SandboxError(f"connector socket {path} is not an absolute path")
    try:
        mode = os.lstat(path).st_mode
    except OSError as e:
        raise SandboxError(f"connector socket {path}: {e}") from e
    if not stat.S_ISSOCK(mode):
        raise SandboxError(f"connector socket {path} is not a Unix socket")


def _child_pid(info: bytes) -> int | None:
    try:
        pid = json.loads(info)["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) and pid > 0 else None


def _pin_child(pid: int, parent: int) -> int | None:
    """A pidfd on bubblewrap's sandbox init, checked to be bubblewrap's child
    (so never a recycled pid)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        ppid = -1
    if ppid != parent:
        os.close(fd)
        return None
    return fd
