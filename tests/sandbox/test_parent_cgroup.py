"""Limits on the aecl/ parent cgroup (all sandboxes together): written where
the controller is attached, reported, refused like the per-sandbox limits.

The aecl/ parent may be shared with other runs on this machine (a v1
hierarchy where this process sits in the root cgroup): the values written
here are harmlessly large, except the memory total, which is only written
where the memory parent is not the root's, and each test puts back what
was there."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from enforcer.errors import SandboxError
from enforcer.sandbox.cgroups import CgroupSupport, _write
from enforcer.sandbox.profile import ResourceLimits
from tests.sandbox.conftest import make_runner, run_py

FILES = {"total_memory": {1: "memory.limit_in_bytes", 2: "memory.max"}, "total_pids": {1: "pids.max", 2: "pids.max"}}
CONTROLLER = {"total_memory": "memory", "total_pids": "pids"}


def _parents(controller: str) -> list:
    """The aecl/ parents carrying `controller`, as a plain runner finds them."""
    return [h for h in make_runner().cgroups.hierarchies if controller in h.controllers]


@contextmanager
def restored(*totals: str):
    """Put the parents' limit files back as they were."""
    saved = []
    for t in totals:
        for h in _parents(CONTROLLER[t]):
            for f in {FILES[t][h.version], "memory.memsw.limit_in_bytes"} if t == "total_memory" else {FILES[t][h.version]}:
                p = h.base / f
                if p.exists():
                    saved.append((p, p.read_text().strip()))
    try:
        yield
    finally:
        for _ in range(2):  # memsw and limit_in_bytes constrain each other: twice settles both
            for p, v in saved:
                try:
                    _write(p, "-1" if p.name.startswith("memory.") and p.name.endswith("limit_in_bytes")
                           and int(v) >= 1 << 62 else v)
                except OSError:
                    pass


def _need(runner, total: str) -> None:
    why = runner.cgroups.totals_missing.get(total)
    if why is None:
        return
    if "no cgroup hierarchy with this controller" in why:
        pytest.skip(f"this machine has no usable {CONTROLLER[total]} controller: {why}")
    pytest.fail(f"{total} should apply here: {why}")


def test_the_totals_are_written_on_the_parent_and_reported():
    pids, mem = 500_000 + 7, (32 << 30) + (5 << 12)  # far above anything running here
    with restored("total_pids", "total_memory"):
        runner = make_runner(total_pids=pids, total_memory_bytes=mem)
        _need(runner, "total_pids")
        _need(runner, "total_memory")
        for total, value in (("total_pids", pids), ("total_memory", mem)):
            parents = [h for h in runner.cgroups.hierarchies if CONTROLLER[total] in h.controllers]
            assert parents, runner.cgroups.describe()
            for h in parents:
                assert h.base.name == "aecl"
                assert (h.base / FILES[total][h.version]).read_text().strip() == str(value)
        line = runner.describe()
        assert f"parent limits total_memory={mem} (cgroup v1), total_pids={pids} (cgroup v1)" in line, line
        # The per-sandbox limits are unchanged, and still apply below the parent.
        assert runner.cgroups.applied == {"cpu": "cgroup v1", "memory": "cgroup v1", "pids": "cgroup v1"}
        r = run_py(runner, "print('{}')")
        assert r.exit_code == 0


def test_unset_totals_write_nothing():
    with restored("total_pids"):
        parents = _parents("pids")
        if not parents:
            pytest.skip("no pids controller here")
        f = parents[0].base / FILES["total_pids"][parents[0].version]
        _write(f, "400009")
        runner = make_runner()
        assert f.read_text().strip() == "400009"  # an operator's value stays
        assert "parent limits" not in runner.describe()
        assert runner.cgroups.totals_applied == {} and runner.cgroups.totals_missing == {}


def test_the_memory_total_stops_a_bomb_with_no_per_sandbox_memory_limit():
    """The memory hierarchy is used for the total alone: no per-sandbox
    memory limit, and the parent's still kills the bomb inside the sandbox."""
    parents = _parents("memory")
    if not parents:
        pytest.skip("no memory controller here")
    if Path("/proc/self/cgroup").read_text().count(":memory:/\n"):
        pytest.skip("the memory parent here is the host root's aecl/, shared with every other run")
    with restored("total_memory"):
        runner = make_runner(total_memory_bytes=128 << 20,
                             limits={"memory_bytes": None, "address_space_bytes": 4 << 30})
        _need(runner, "total_memory")
        assert "memory" not in runner.cgroups.applied and "memory" not in runner.cgroups.missing
        assert any("memory" in h.controllers for h in runner.cgroups.hierarchies)
        r = run_py(runner, """
            chunks = []
            while True:
                chunks.append(bytearray(16 << 20))
        """, timeout=30)
    assert r.exit_code == 128 + signal.SIGKILL, (r.exit_code, r.stderr[-500:])
    assert "memory" in r.limits_hit
    assert r.peak_memory_bytes is not None and r.peak_memory_bytes <= (129 << 20)


def test_totals_where_the_machine_has_no_cgroups_are_reported_or_refused():
    sup = CgroupSupport.detect(ResourceLimits(cgroups="auto"), mountinfo="", proc_cgroup="0::/\n",
                               total_memory_bytes=1 << 30, total_pids=1000)
    assert set(sup.totals_missing) == {"total_memory", "total_pids"} and not sup.totals_applied
    assert set(sup.missing) == {"memory", "pids", "cpu"}
    assert "parent limits not applied: total_memory: no cgroup hierarchy" in sup.describe()
    # Only the totals are asked for: still refused under `required`, and named.
    with pytest.raises(SandboxError, match="total_pids"):
        CgroupSupport.detect(ResourceLimits(cgroups="required", memory_bytes=None, pids=None, cpus=None),
                             mountinfo="", proc_cgroup="0::/\n", total_pids=1000)
    assert CgroupSupport.detect(ResourceLimits(cgroups="required", memory_bytes=None, pids=None, cpus=None),
                                mountinfo="", proc_cgroup="0::/\n").missing == {}


def test_totals_with_cgroups_off_are_reported():
    runner = make_runner(limits={"cgroups": "off"}, total_pids=1000)
    assert runner.cgroups.totals_missing == {"total_pids": "cgroups are off in the profile"}
    assert "parent limits not applied: total_pids: cgroups are off in the profile" in runner.describe()


def test_a_total_the_kernel_refuses_is_reported_not_fatal():
    # pids.max accepts at most PID_MAX_LIMIT (4M): a larger value is refused.
    with restored("total_pids"):
        runner = make_runner(total_pids=1 << 40)
        if not _parents("pids"):
            pytest.skip("no pids controller here")
        assert "total_pids" in runner.cgroups.totals_missing, runner.describe()
        assert "cgroup v1 at" in runner.cgroups.totals_missing["total_pids"]
        with pytest.raises(SandboxError, match="total_pids"):
            make_runner(total_pids=1 << 40, limits={"cgroups": "required"})
