"""Resource caps and timeouts, for real: each bomb is stopped by the limit
meant to stop it, inside the sandbox only, and the result says which."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from enforcer.sandbox.profile import SandboxOverrides
from tests.sandbox.conftest import PY, TRY, host_pids_with, make_runner, probe, run_py


def _require_cgroup(runner, limit: str) -> None:
    if limit not in runner.cgroups.applied:
        pytest.fail(f"this machine should allow the {limit} cgroup limit: {runner.cgroups.describe()}")


def _own_memory_oom_kills() -> int | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            f = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control"
            for row in f.read_text().splitlines() if f.exists() else []:
                if row.startswith("oom_kill "):
                    return int(row.split()[1])
    return None


def test_fork_bomb_is_stopped_by_the_process_cap():
    runner = make_runner(limits={"pids": 32})
    _require_cgroup(runner, "pids")
    started = time.monotonic()
    r = run_py(runner, """
        import os, time, json, sys
        n, err = 0, None
        while n < 10000:
            try:
                pid = os.fork()
            except OSError as e:
                err = e.errno
                break
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            n += 1
        print(json.dumps({"forked": n, "errno": err}))
        sys.stdout.flush()
        os._exit(0)
    """, timeout=20)
    out = __import__("json").loads(r.stdout)
    assert out["errno"] == errno.EAGAIN and out["forked"] < 32, out
    assert "pids" in r.limits_hit
    assert time.monotonic() - started < 15  # the sleeping children went with the sandbox


def test_memory_bomb_is_killed_inside_the_sandbox_only():
    runner = make_runner(limits={"memory_bytes": 128 << 20, "address_space_bytes": 4 << 30})
    _require_cgroup(runner, "memory")
    before = _own_memory_oom_kills()
    r = run_py(runner, """
        chunks = []
        while True:
            chunks.append(bytearray(16 << 20))  # zero-filled: every page touched
    """, timeout=30)
    assert r.exit_code == 128 + signal.SIGKILL, (r.exit_code, r.stderr[-500:])
    assert "memory" in r.limits_hit
    assert r.peak_memory_bytes is not None and (96 << 20) <= r.peak_memory_bytes <= (129 << 20)
    assert _own_memory_oom_kills() == before  # the service's own cgroup saw no OOM kill


def test_memory_bomb_without_cgroups_hits_the_address_space_rlimit():
    runner = make_runner(limits={"cgroups": "off", "address_space_bytes": 256 << 20})
    assert not runner.cgroups.enabled
    r = run_py(runner, """
        chunks = []
        while True:
            chunks.append(bytearray(16 << 20))
    """, timeout=30)
    assert r.exit_code == 1 and b"MemoryError" in r.stderr


def test_disk_fill_hits_the_tmpfs_size():
    runner = make_runner(tmpfs_size_bytes=8 << 20, shm_size_bytes=1 << 20)
    out = probe(runner, """
        import json, os
        def fill(path):
            written = 0
            try:
                with open(path, "wb") as f:
                    while True:
                        f.write(b"x" * 65536); f.flush(); written += 65536
            except OSError as e:
                return written, e.errno
        print(json.dumps({"tmp": fill("/tmp/fill"), "shm": fill("/dev/shm/fill"), "dev": fill("/dev/fill")}))
    """)
    assert out["tmp"][1] == errno.ENOSPC and out["tmp"][0] <= 8 << 20
    assert out["shm"][1] == errno.ENOSPC and out["shm"][0] <= 1 << 20
    assert out["dev"] == [0, errno.EROFS]


def test_a_tool_override_sets_its_own_scratch_size():
    runner = make_runner()
    out = probe(runner, """
        import json
        n = 0
        try:
            with open("/tmp/fill", "wb") as f:
                while True:
                    f.write(b"x" * 65536); f.flush(); n += 65536
        except OSError as e:
            print(json.dumps({"written": n, "errno": e.errno}))
    """, sandbox=SandboxOverrides(tmpfs_size_bytes=2 << 20))
    assert out["errno"] == errno.ENOSPC and out["written"] <= 2 << 20


def test_file_size_rlimit_caps_a_single_file():
    runner = make_runner(tmpfs_size_bytes=32 << 20, limits={"file_size_bytes": 1 << 20})
    out = probe(runner, TRY + """
        import json
        def big():
            with open("/tmp/big", "wb") as f:
                f.write(b"x" * (2 << 20))
        print(json.dumps({"big": attempt(big)}))
    """)
    assert out == {"big": "EFBIG"}  # Python ignores SIGXFSZ, so the write fails instead


def test_cpu_spin_hits_the_cpu_time_cap():
    runner = make_runner(limits={"cpu_seconds": 1})
    started = time.monotonic()
    r = run_py(runner, "while True: pass", timeout=30)
    assert r.exit_code == 128 + signal.SIGXCPU
    assert "cpu_time" in r.limits_hit and not r.timed_out
    assert r.cpu_time_s is not None and 0.9 <= r.cpu_time_s <= 3
    assert time.monotonic() - started < 10


def test_cpu_quota_throttles_a_spin():
    runner = make_runner(limits={"cpus": 0.2})
    _require_cgroup(runner, "cpu")
    r = run_py(runner, """
        import time
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            pass
    """, timeout=30)
    assert r.exit_code == 0
    assert r.cpu_time_s is not None and r.cpu_time_s < 0.75, r.cpu_time_s  # 1.5 s at 0.2 CPU is ~0.3 s


def test_open_files_and_processes_rlimits_are_set(runner):
    out = probe(runner, """
        import resource, json
        print(json.dumps({n: resource.getrlimit(getattr(resource, n)) for n in
                          ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_CORE")}))
    """)
    lim = runner.profile.limits
    assert out["RLIMIT_NOFILE"] == [lim.open_files, lim.open_files]
    assert out["RLIMIT_NPROC"] == [lim.processes, lim.processes]
    assert out["RLIMIT_CPU"] == [lim.cpu_seconds, lim.cpu_seconds + 1]
    assert out["RLIMIT_AS"] == [lim.address_space_bytes] * 2
    assert out["RLIMIT_FSIZE"] == [lim.file_size_bytes] * 2
    assert out["RLIMIT_CORE"] == [0, 0]


async def longest_stall(work):
    """(result of `work`, longest time the event loop went without running
    other tasks while it ran): a ticker wakes every 10 ms, and the stall is
    the widest gap between its beats, counting the stretch from the start to
    the first beat and from the last beat to the end. A run shorter than one
    tick (or one that blocks the loop throughout) still measures: there is no
    empty list of gaps, and no stall at either end goes unseen."""
    beats = [time.monotonic()]

    async def ticker():
        while True:
            await asyncio.sleep(0.01)
            beats.append(time.monotonic())

    t = asyncio.ensure_future(ticker())
    try:
        result = await work
    finally:
        beats.append(time.monotonic())
        t.cancel()
    return result, max(b - a for a, b in zip(beats, beats[1:]))


def test_the_stall_probe_sees_a_stall_spanning_a_whole_short_run():
    """The probe below once failed with `max() arg is an empty sequence`: it
    only timed gaps between two beats, and a run ending before the second
    beat (a fast run, or the loop blocked throughout) left none."""
    async def blocks_the_loop():
        time.sleep(0.05)  # never yields: no beat can happen during the run
        return "done"

    async def yields_quickly():
        await asyncio.sleep(0)
        return "done"

    result, stall = asyncio.run(longest_stall(blocks_the_loop()))
    assert result == "done" and stall >= 0.05
    result, stall = asyncio.run(longest_stall(yields_quickly()))
    assert result == "done" and 0 <= stall < 0.5


def test_a_gigabyte_to_stdout_is_truncated_while_the_runner_stays_responsive():
    runner = make_runner(max_output_bytes=1 << 20)

    async def scenario():
        started = time.monotonic()
        r, worst_gap = await longest_stall(runner.run(PY + ["""
import os
block = b"x" * (1 << 20)
for _ in range(1024):
    os.write(1, block)
"""], b"", 60, None))
        return r, time.monotonic() - started, worst_gap

    r, elapsed, worst_gap = asyncio.run(scenario())
    assert r.output_truncated and len(r.stdout) == 1 << 20
    assert "output" in r.limits_hit
    assert elapsed < 10
    assert worst_gap < 0.5, worst_gap


def test_timeout_kills_a_double_forked_child_that_ignores_sigterm():
    runner = make_runner()
    marker = "aecl-orphan-" + uuid.uuid4().hex
    r = run_py(runner, f"""
        import os, signal, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                os.execv("/usr/bin/python3", ["python3", "-c", "import time; time.sleep(600)", "{marker}"])
            os._exit(0)
        time.sleep(600)
    """, timeout=1.5)
    assert r.timed_out and r.limits_hit == ("timeout",)
    deadline = time.monotonic() + 5
    while host_pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not host_pids_with(marker)


def test_lifetime_kill_switch_caps_a_longer_timeout():
    runner = make_runner(lifetime_s=2)
    started = time.monotonic()
    r = run_py(runner, "import time; time.sleep(60)", timeout=60)
    assert r.timed_out and r.limits_hit == ("lifetime",)
    assert 1.8 <= time.monotonic() - started < 8


def test_lifetime_kill_switch_does_not_depend_on_the_runners_bookkeeping():
    """The watchdog kills from the kernel's view (the sandbox's cgroup, whose
    name carries its deadline) even a sandbox the runner lost track of."""
    runner = make_runner(lifetime_s=3)
    if not runner.cgroups.enabled:
        pytest.fail(f"cgroups should be usable here: {runner.cgroups.describe()}")
    marker = "aecl-lost-" + uuid.uuid4().hex

    async def scenario():
        task = asyncio.ensure_future(runner.run(
            PY + ["import time; time.sleep(120)", marker], b"", 120, None))
        while not runner._live:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        with runner._lock:
            lost = list(runner._live.values())
            runner._live.clear()  # the bookkeeping forgets it
        lost[0].lifetime_deadline = float("inf")
        started = time.monotonic()
        r = await asyncio.wait_for(task, 20)
        return r, time.monotonic() - started

    r, waited = asyncio.run(scenario())
    assert r.signal is not None or r.exit_code == 128 + signal.SIGKILL or r.exit_code == 255, r
    assert waited < 6
    assert not host_pids_with(marker)


def test_kill_all_stops_every_running_sandbox():
    runner = make_runner()
    marker = "aecl-shutdown-" + uuid.uuid4().hex

    async def scenario():
        tasks = [asyncio.ensure_future(runner.run(PY + ["import time; time.sleep(60)", marker], b"", 60, None))
                 for _ in range(3)]
        while len(host_pids_with(marker)) < 3:
            await asyncio.sleep(0.05)
        runner.kill_all()
        return await asyncio.wait_for(asyncio.gather(*tasks), 10)

    results = asyncio.run(scenario())
    assert all(r.exit_code != 0 for r in results)
    assert not host_pids_with(marker)


def test_cancelling_a_call_kills_its_sandbox():
    runner = make_runner()
    marker = "aecl-cancel-" + uuid.uuid4().hex

    async def scenario():
        t = asyncio.ensure_future(runner.run(PY + ["import time; time.sleep(60)", marker], b"", 60, None))
        while not host_pids_with(marker):
            await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(scenario())
    deadline = time.monotonic() + 5
    while host_pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not host_pids_with(marker)


def test_sandbox_cgroups_are_removed_after_each_run(runner):
    r = run_py(runner, "print('{}')")
    assert r.exit_code == 0
    deadline = time.monotonic() + 5  # removal may finish on the watchdog's thread
    while any(n.startswith(r.sandbox_id) for h in runner.cgroups.hierarchies for n in os.listdir(h.base)):
        assert time.monotonic() < deadline, "the sandbox's cgroups were not removed"
        time.sleep(0.05)


def test_usage_is_recorded(runner):
    r = run_py(runner, """
        x = bytearray(40 << 20)
        s = 0
        for i in range(2_000_000):
            s += i
    """)
    assert r.exit_code == 0
    assert r.cpu_time_s is not None and r.cpu_time_s > 0.05
    assert r.peak_memory_bytes is not None and r.peak_memory_bytes >= 40 << 20
    assert r.limits_hit == ()


def test_sweep_kills_expired_and_removes_stale_empty_sandbox_cgroups():
    runner = make_runner()
    sup = runner.cgroups
    now = time.time()
    expired = sup.create(f"sbx_{uuid.uuid4().hex}.{int(now) - 1}")
    stale = sup.create(f"sbx_{uuid.uuid4().hex}.{int(now) + 3600}")
    fresh = sup.create(f"sbx_{uuid.uuid4().hex}.{int(now) + 3600}")
    try:
        assert sup.sweep(now) == []  # nothing ran in them: nothing killed
        assert not any(d.exists() for _, d in expired.dirs)
        assert all(d.exists() for _, d in stale.dirs + fresh.dirs)
        sup.sweep(now + 120)  # two minutes on, both empty ones are stale
        assert not any(d.exists() for _, d in stale.dirs + fresh.dirs)
    finally:
        for cg in (expired, stale, fresh):
            cg.remove()
