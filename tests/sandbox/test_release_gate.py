"""The release gate, for real under bubblewrap: the sandbox is built and
confined while `release` is pending, the tool runs only once it succeeded,
and a failed, cancelled or abandoned release means no tool code ever ran.

The tool's one effect visible from the host is a write to a FIFO bound
read-only into the sandbox (a FIFO stays writable on a read-only mount):
the test holds its read end, so it sees whether the tool ran even when
run() raises and returns no output."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from enforcer.sandbox.cgroups import SandboxCgroup
from enforcer.sandbox.profile import SandboxOverrides
from tests.conftest import REPO
from tests.sandbox.conftest import PY, host_pids_with, make_runner


class Effect:
    """A FIFO in a directory under /opt (binds under /tmp are refused)."""

    def __init__(self) -> None:
        self.dir = Path("/opt") / f"aecl-test-gate-{uuid.uuid4().hex[:12]}"
        self.dir.mkdir(mode=0o755)
        self.fifo = self.dir / "effect"
        os.mkfifo(self.fifo, 0o666)
        os.chmod(self.fifo, 0o666)
        self.fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.marker = "aecl-gate-" + uuid.uuid4().hex
        self.overrides = SandboxOverrides(ro_binds=[str(self.dir)])

    def command(self) -> list[str]:
        """The tool: its first act is to write to the FIFO, then it prints
        when it started (CLOCK_MONOTONIC, shared with the host)."""
        return PY + [f"""
import os, time
started = time.monotonic()
fd = os.open({str(self.fifo)!r}, os.O_WRONLY | os.O_NONBLOCK)
os.write(fd, b"ran")
print(started, flush=True)
""", self.marker]

    def seen(self) -> bytes:
        try:
            return os.read(self.fd, 4096)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self.fd)
        shutil.rmtree(self.dir)


@pytest.fixture
def effect():
    e = Effect()
    yield e
    e.close()


def _runner_kind(fd: str) -> bool:
    """Whether an fd is of a kind the runner opens (pipes, pidfds, cgroup
    files): sockets and files other threads of the test process open (a
    keep-alive client, a supervised process's log of an earlier test) are
    not the runner's to close."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False  # closed meanwhile
    return target.startswith(("pipe:", "anon_inode:[pidfd]", "/sys/fs/cgroup"))


def _open_fds() -> set[str]:
    gc.collect()  # objects of earlier tests closing their fds meanwhile
    return {fd for fd in os.listdir("/proc/self/fd") if _runner_kind(fd)}


async def _no_new_fds(before: set[str]) -> None:
    """Nothing left open that was not before. Watchdog threads (this
    runner's and earlier ones') open directories and pidfds for a moment:
    only an fd that stays is a leak."""
    for _ in range(100):
        extra = _open_fds() - before
        if not extra:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fds left open: {extra}")


async def _confined(runner, timeout: float = 15.0):
    """The one live sandbox, once its init sits in its cgroup (the set-up
    done) while bubblewrap waits for the go."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for live in list(runner._live.values()):
            if live.cgroup is not None and live.cgroup.pids():
                return live
        await asyncio.sleep(0.005)
    raise AssertionError("the sandbox was not set up while its release was pending")


def _gone(runner, sandbox_id: str, marker: str) -> None:
    """No process of the sandbox and, soon, no cgroup of it are left."""
    deadline = time.monotonic() + 5
    while host_pids_with(marker) or any(n.startswith(sandbox_id) for h in runner.cgroups.hierarchies
                                        for n in os.listdir(h.base)):
        assert time.monotonic() < deadline, (host_pids_with(marker), sandbox_id)
        time.sleep(0.05)


def _require_cgroups(runner) -> None:
    if not runner.cgroups.enabled:
        pytest.fail(f"cgroups should be usable here: {runner.cgroups.describe()}")


@pytest.mark.parametrize("when", ["at_once", "after_setup"])
def test_a_failed_release_kills_the_sandbox_unreleased_and_is_reraised(effect, when):
    runner = make_runner()
    _require_cgroups(runner)
    failure = OSError(5, "fsync of the audit entry failed")
    seen: dict = {}

    async def release():
        if when == "after_setup":
            live = await _confined(runner)
            seen["id"] = live.sandbox_id
            await asyncio.sleep(0.2)  # the tool would have had time to write
        raise failure

    async def scenario():
        fds = _open_fds()
        with pytest.raises(OSError) as e:
            await runner.run(effect.command(), b"{}", 30, None, sandbox=effect.overrides, release=release())
        assert e.value is failure
        assert runner.running == 0 and runner.waiting == 0
        await _no_new_fds(fds)  # pipes and pidfd closed

    asyncio.run(scenario())
    assert effect.seen() == b""  # the tool never ran
    if "id" in seen:
        _gone(runner, seen["id"], effect.marker)
    assert not host_pids_with(effect.marker)


def test_the_tool_runs_only_after_a_late_release_and_its_output_is_returned(effect):
    runner = make_runner()
    _require_cgroups(runner)
    released_at: list[float] = []

    async def release():
        await _confined(runner)  # set up concurrently with the release
        await asyncio.sleep(0.3)
        assert effect.seen() == b""  # confined, but still held
        released_at.append(time.monotonic())
        return "fsynced"

    async def scenario():
        return await runner.run(effect.command(), b"{}", 30, None, sandbox=effect.overrides, release=release())

    r = asyncio.run(scenario())
    assert r.exit_code == 0, r.stderr
    assert float(r.stdout) >= released_at[0]  # it started after the release
    assert effect.seen() == b"ran"
    assert runner.running == 0


def test_an_already_done_release_runs_the_tool(effect):
    runner = make_runner()

    async def scenario():
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return await runner.run(effect.command(), b"{}", 30, None, sandbox=effect.overrides, release=done)

    r = asyncio.run(scenario())
    assert r.exit_code == 0 and float(r.stdout) > 0
    assert effect.seen() == b"ran"


def test_cancelling_run_while_it_waits_on_release_kills_it_unreleased(effect):
    runner = make_runner()
    _require_cgroups(runner)

    async def scenario():
        fds = _open_fds()
        pending = asyncio.get_running_loop().create_future()  # the caller's: never completes
        task = asyncio.ensure_future(runner.run(effect.command(), b"{}", 30, None,
                                                sandbox=effect.overrides, release=pending))
        live = await _confined(runner)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not pending.done()  # the caller's future is left alone
        assert runner.running == 0
        await _no_new_fds(fds)
        return live.sandbox_id

    sid = asyncio.run(scenario())
    assert effect.seen() == b""
    _gone(runner, sid, effect.marker)


def test_a_cancelled_release_is_reraised_and_nothing_runs(effect):
    runner = make_runner()
    _require_cgroups(runner)

    async def scenario():
        gate = asyncio.ensure_future(asyncio.sleep(3600))  # e.g. the caller's fsync task, cancelled
        task = asyncio.ensure_future(runner.run(effect.command(), b"{}", 30, None,
                                                sandbox=effect.overrides, release=gate))
        live = await _confined(runner)
        gate.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.current_task().cancelling() == 0  # raised by the gate, not by a cancel of ours
        return live.sandbox_id

    sid = asyncio.run(scenario())
    assert effect.seen() == b""
    _gone(runner, sid, effect.marker)


def test_a_timeout_while_the_release_is_pending_kills_it_unreleased(effect):
    runner = make_runner()

    async def scenario():
        pending = asyncio.get_running_loop().create_future()
        return await runner.run(effect.command(), b"{}", 1.0, None, sandbox=effect.overrides, release=pending)

    r = asyncio.run(scenario())
    assert r.timed_out and r.limits_hit == ("timeout",) and r.stdout == b""
    assert effect.seen() == b""


_SERVICE = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from enforcer.sandbox.cgroups import SandboxCgroup
from enforcer.sandbox.profile import SandboxOverrides
from tests.sandbox.conftest import make_runner

async def main():
    runner = make_runner()
    never = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(runner.run({command!r}, b"{{}}", 60, None,
                                            sandbox=SandboxOverrides(ro_binds=[{dir!r}]), release=never))
    while True:
        for live in list(runner._live.values()):
            if live.cgroup is not None and live.cgroup.pids():
                print(live.sandbox_id, flush=True)
                await task
        await asyncio.sleep(0.005)

asyncio.run(main())
"""


def test_a_service_killed_while_the_release_is_pending_leaves_the_tool_frozen_unreleased(effect):
    """The release may take as long as an fsync: the service dying meanwhile
    must not let the tool run (end-of-file on the block pipe would)."""
    runner = make_runner()
    if not runner.cgroups.can_freeze:
        pytest.fail(f"this machine has a cgroup v2 hierarchy: {runner.cgroups.describe()}")
    code = _SERVICE.format(repo=str(REPO), command=effect.command(), dir=str(effect.dir))
    svc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO)
    sid = ""
    try:
        sid = svc.stdout.readline().decode().strip()
        assert sid.startswith("sbx_"), sid
        svc.send_signal(signal.SIGKILL)
        svc.wait(10)
        time.sleep(1.0)  # ample time for a released tool to write
        assert effect.seen() == b""  # the tool never ran
        v2 = [d for h in runner.cgroups.hierarchies if h.version == 2
              for d in h.base.iterdir() if d.name.startswith(sid)]
        assert v2 and "frozen 1" in (v2[0] / "cgroup.events").read_text()
    finally:
        if svc.poll() is None:
            svc.kill()
            svc.wait()
        # What the next instance's sweep does at the sandbox's deadline.
        cg = SandboxCgroup([(h, d) for h in runner.cgroups.hierarchies for d in h.base.iterdir()
                            if sid and d.name.startswith(sid)])
        cg.kill()
        deadline = time.monotonic() + 5
        while not cg.remove() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not host_pids_with(effect.marker)
    assert effect.seen() == b""


def test_no_release_argument_behaves_as_before(effect):
    runner = make_runner()
    r = asyncio.run(runner.run(effect.command(), b"{}", 30, None, sandbox=effect.overrides))
    assert r.exit_code == 0 and effect.seen() == b"ran"
    json.loads(r.stdout)  # a float: the start time
