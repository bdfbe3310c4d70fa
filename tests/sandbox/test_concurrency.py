"""The service-wide cap on concurrent sandboxes: real bubblewrap runs print
when their tool started and ended (CLOCK_MONOTONIC, the same clock inside the
sandbox's pid namespace as outside), and the intervals must never overlap
more than the cap allows; slots go in arrival order; a full queue fails fast
with SandboxBusy; a cancelled waiter leaks nothing. Only ordering and overlap
facts are asserted, never durations."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest

from enforcer.errors import ResourceExhausted, SandboxBusy
from enforcer.sandbox.runner import BwrapRunner, _Slots
from tests.conftest import require_bwrap
from tests.sandbox.conftest import PROFILE, PY, host_pids_with

SPAN = """
import time
started = time.monotonic()
time.sleep({sleep})
print(started, time.monotonic(), flush=True)
"""


def capped(n: int, waiting: int = 64) -> BwrapRunner:
    require_bwrap()
    return BwrapRunner("/usr/bin/bwrap", PROFILE, 1 << 20, max_concurrent=n, max_waiting=waiting)


def span(runner: BwrapRunner, sleep: float = 0.4, marker: str = ""):
    return runner.run(PY + [SPAN.format(sleep=sleep), marker or "aecl-span"], b"", 60, None)


def interval(result) -> tuple[float, float]:
    assert result.exit_code == 0, (result.exit_code, result.stderr[-500:])
    start, end = map(float, result.stdout.split())
    return start, end


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))  # an end before a start at the same instant
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


async def until(cond, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("cap", [1, 2])
def test_no_more_than_max_concurrent_sandboxes_run_at_once(cap):
    runner = capped(cap)
    seen = {"running": 0, "waiting": 0}

    async def scenario():
        async def watch():
            while True:
                seen["running"] = max(seen["running"], runner.running)
                seen["waiting"] = max(seen["waiting"], runner.waiting)
                await asyncio.sleep(0.002)

        w = asyncio.ensure_future(watch())
        results = await asyncio.gather(*(span(runner) for _ in range(cap + 1)))
        w.cancel()
        return results

    results = asyncio.run(scenario())
    spans = [interval(r) for r in results]
    assert len(spans) == cap + 1  # all of them finished
    assert max_overlap(spans) <= cap, spans
    assert seen["running"] <= cap
    assert seen["waiting"] >= 1  # the extra one did queue
    assert runner.running == 0 and runner.waiting == 0


def test_slots_are_granted_in_arrival_order():
    runner = capped(1)

    async def scenario():
        tasks = []
        for i in range(4):
            tasks.append(asyncio.ensure_future(span(runner, 0.2)))
            await until(lambda n=i + 1: runner.running + runner.waiting == n, f"caller {i} registered")
        assert runner.running == 1 and runner.waiting == 3
        return await asyncio.gather(*tasks)

    spans = [interval(r) for r in asyncio.run(scenario())]
    for earlier, later in itertools.pairwise(spans):
        assert earlier[1] <= later[0], spans  # one at a time, in the order they came


def test_a_full_queue_fails_at_once_with_sandbox_busy():
    runner = capped(1, waiting=0)

    async def scenario():
        first = asyncio.ensure_future(span(runner, 1.0))
        await until(lambda: runner.running == 1, "the first sandbox")
        marker = "aecl-busy-" + uuid.uuid4().hex
        with pytest.raises(SandboxBusy) as e:
            await span(runner, 0.0, marker)
        assert not first.done()  # refused while the first still runs: no waiting
        assert not host_pids_with(marker)  # nothing was started for it
        r = await first
        return e.value, r

    err, first = asyncio.run(scenario())
    assert "sandbox.max_concurrent=1 reached and 0 callers already waiting" in str(err)
    assert isinstance(err, ResourceExhausted) and err.code == "sandbox_busy"
    assert first.exit_code == 0
    # The slot came back: the next call runs.
    assert asyncio.run(span(runner, 0.0)).exit_code == 0


def test_busy_counts_the_waiters_and_leaves_a_callers_release_alone():
    runner = capped(1, waiting=1)

    async def scenario():
        first = asyncio.ensure_future(span(runner, 0.5))
        await until(lambda: runner.running == 1, "the first sandbox")
        second = asyncio.ensure_future(span(runner, 0.0))
        await until(lambda: runner.waiting == 1, "the second caller queued")
        gate = asyncio.get_running_loop().create_future()
        with pytest.raises(SandboxBusy, match="sandbox.max_concurrent=1 reached and 1 callers already waiting"):
            await runner.run(PY + ["print(1)"], b"", 10, None, release=gate)
        assert not gate.cancelled()  # the caller's future is the caller's
        return await asyncio.gather(first, second)

    assert all(r.exit_code == 0 for r in asyncio.run(scenario()))
    assert runner.running == 0 and runner.waiting == 0


def test_a_cancelled_waiter_leaves_the_queue_without_leaking_a_slot():
    runner = capped(1)

    async def scenario():
        first = asyncio.ensure_future(span(runner, 0.5))
        await until(lambda: runner.running == 1, "the first sandbox")
        marker = "aecl-never-" + uuid.uuid4().hex
        doomed = asyncio.ensure_future(span(runner, 0.0, marker))
        third = asyncio.ensure_future(span(runner, 0.0))
        await until(lambda: runner.waiting == 2, "two callers queued")
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert runner.waiting == 1 and runner.running == 1
        a, c = await asyncio.gather(first, third)
        assert not host_pids_with(marker)
        return interval(a), interval(c)

    a, c = asyncio.run(scenario())
    assert a[1] <= c[0]
    assert runner.running == 0 and runner.waiting == 0
    # The slot is free again: the next call runs.
    assert asyncio.run(span(runner, 0.0)).exit_code == 0


def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on():
    """The race a semaphore must survive: the slot is handed to a waiter, and
    that waiter is cancelled before it resumes."""
    async def scenario():
        slots = _Slots(1, 10)
        await slots.acquire()
        b = asyncio.ensure_future(slots.acquire())
        c = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        assert slots.waiting == 2
        slots.release()   # handed to b...
        b.cancel()        # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await b
        await asyncio.wait_for(c, 1)  # c got it
        assert slots.running == 1 and slots.waiting == 0
        slots.release()
        assert slots.running == 0
        await slots.acquire()  # and it is free for a newcomer
        assert slots.running == 1

    asyncio.run(scenario())


def test_the_cap_is_validated():
    require_bwrap()
    for bad in ({"max_concurrent": 0}, {"max_waiting": -1}, {"total_pids": 0}, {"total_memory_bytes": -5}):
        with pytest.raises(ValueError):
            BwrapRunner("/usr/bin/bwrap", PROFILE, 1 << 20, **bad)
    assert "at most 3 sandboxes at once, 5 callers waiting" in BwrapRunner(
        "/usr/bin/bwrap", PROFILE, 1 << 20, max_concurrent=3, max_waiting=5).describe()


def test_the_wait_for_a_slot_counts_against_the_calls_timeout():
    runner = capped(1)

    async def scenario():
        first = asyncio.ensure_future(span(runner, 1.5))
        await until(lambda: runner.running == 1, "the first sandbox")
        marker = "aecl-late-" + uuid.uuid4().hex
        with pytest.raises(SandboxBusy, match="no sandbox slot came free within the call's timeout"):
            await runner.run(PY + ["print(1)", marker], b"", 0.3, None)
        assert not first.done() and runner.waiting == 0  # gave up before the slot freed, left the queue
        assert not host_pids_with(marker)
        return await first

    assert asyncio.run(scenario()).exit_code == 0
    assert runner.running == 0


def test_a_caller_queued_for_a_slot_at_shutdown_never_starts_a_sandbox():
    """kill_all kills what runs; a caller still waiting for a slot is refused
    when the slot comes free, instead of starting a sandbox after shutdown."""
    from enforcer.errors import SandboxError

    runner = capped(1)

    async def go():
        first = asyncio.ensure_future(span(runner, sleep=30))
        await until(lambda: runner.running == 1, "the first sandbox")
        second = asyncio.ensure_future(span(runner, sleep=0, marker="aecl-late-" + uuid.uuid4().hex))
        await until(lambda: runner.waiting == 1, "the queued caller")
        runner.kill_all()
        killed = await first
        assert "shutdown" in killed.limits_hit
        with pytest.raises(SandboxError, match="shutting down"):
            await second
        assert runner.running == 0
    try:
        asyncio.run(go())
    finally:
        runner.close()
