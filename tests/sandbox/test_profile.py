"""Profile and registry validation, per-tool overrides, the seccomp program,
cgroup detection, and what the service reports at startup."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import pytest

from enforcer.errors import ConfigError, SandboxError
from enforcer.manifests import load_registry
from enforcer.sandbox.bwrap import bwrap_argv
from enforcer.sandbox.cgroups import CgroupSupport, _limit_files, own_cgroup_dirs
from enforcer.sandbox.profile import ResourceLimits, SandboxOverrides, SandboxProfile, check_bind
from enforcer.sandbox.runner import BwrapRunner
from enforcer.sandbox.seccomp import DENIED_SYSCALLS, compile_filter
from tests.sandbox.conftest import PROFILE, make_runner, probe


@pytest.mark.parametrize("bad", [
    "/", "/etc", "/home", "/run", "/tmp", "/var", "/proc", "/sys", "/dev", "/root",
    "/var/run/docker.sock", "/run/user/0", "/tmp/x", "/home/alice/.ssh", "/etc/shadow", "/etc/ssh",
    "/etc/sudoers.d", "/var/lib/aecl", "/var/log", "/usr/../etc", "/usr//lib", "relative/path",
    "/opt/aecl/tools", "/proc/self",
])
def test_binds_that_expose_host_state_are_refused(bad):
    with pytest.raises(ValueError):
        SandboxProfile(ro_binds=[bad])
    with pytest.raises(ValueError):
        SandboxOverrides(ro_binds=[bad])


def test_a_symlink_into_a_forbidden_tree_is_refused(tmp_path):
    link = Path("/opt") / f"aecl-test-link-{uuid.uuid4().hex[:8]}"
    link.symlink_to("/etc/ssh")
    try:
        with pytest.raises(ValueError, match="etc/ssh"):
            check_bind(str(link))
    finally:
        link.unlink()


def test_narrow_binds_are_accepted():
    assert SandboxOverrides(ro_binds=["/usr/share/zoneinfo", "/etc/ssl/certs", "/opt/data"]).ro_binds


def test_registry_refuses_a_tool_bind_of_host_state_naming_the_tool(tmp_path):
    reg = tmp_path / "tools.yaml"
    reg.write_text("tools:\n  t:\n    command: [/bin/true]\n    access: read\n"
                   "    sandbox:\n      ro_binds: [/etc/ssh]\n")
    with pytest.raises(ConfigError) as e:
        load_registry(reg)
    assert "tools.t.sandbox.ro_binds" in str(e.value) and "/etc/ssh" in str(e.value)


def test_registry_accepts_overrides(tmp_path):
    reg = tmp_path / "tools.yaml"
    reg.write_text("tools:\n  t:\n    command: [/bin/true]\n    access: read\n    timeout_s: 120\n"
                   "    sandbox:\n      ro_binds: [/etc/ssl/certs]\n      tmpfs_size_bytes: 1048576\n")
    tool = load_registry(reg).get("t")
    assert tool.timeout_s == 120
    assert tool.sandbox == SandboxOverrides(ro_binds=["/etc/ssl/certs"], tmpfs_size_bytes=1 << 20)


def test_a_tool_sees_its_extra_read_only_bind():
    data = Path("/opt") / f"aecl-test-data-{uuid.uuid4().hex[:8]}"
    data.mkdir()
    (data / "rates.json").write_text('{"eur": 1}')
    try:
        out = probe(make_runner(), f"""
            import json, os
            res = {{"read": open("{data}/rates.json").read()}}
            try:
                open("{data}/w", "w")
            except OSError as e:
                res["write"] = e.strerror
            print(json.dumps(res))
        """, sandbox=SandboxOverrides(ro_binds=[str(data)]))
        assert not (data / "w").exists()
    finally:
        shutil.rmtree(data)
    assert out == {"read": '{"eur": 1}', "write": "Read-only file system"}


def test_profile_limits_are_validated():
    with pytest.raises(ValueError):
        ResourceLimits(memory_bytes=1024)
    with pytest.raises(ValueError):
        ResourceLimits(pids=1)
    with pytest.raises(ValueError):
        ResourceLimits(cgroups="sometimes")
    with pytest.raises(ValueError):
        SandboxProfile(lifetime_s=0)


def test_argv_carries_no_data_only_fd_numbers():
    argv = bwrap_argv("/usr/bin/bwrap", PROFILE, ["/bin/true"], None, seccomp_fd=5, info_fd=6, block_fd=7)
    i = argv.index("--")
    assert argv[i + 1:] == ["/bin/true"]
    opts = argv[:i]
    assert opts[opts.index("--seccomp") + 1] == "5" and opts[opts.index("--block-fd") + 1] == "7"
    assert "--setenv" not in opts and "--ro-bind-data" not in opts
    assert ["--remount-ro", "/proc"] == opts[opts.index("/proc") + 1:opts.index("/proc") + 3]


def test_seccomp_program_compiles_with_every_denied_call_known():
    prog = compile_filter()
    assert prog.bpf and len(prog.bpf) % 8 == 0
    assert prog.unknown == ()  # bookworm's libseccomp knows them all
    assert set(prog.denied) == set(DENIED_SYSCALLS)
    for name in ("ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup", "io_uring_enter",
                 "io_uring_register", "keyctl", "add_key", "request_key", "mount", "umount2", "pivot_root",
                 "move_mount", "fsopen", "fsmount", "open_tree", "unshare", "setns"):
        assert name in prog.denied


def test_denied_calls_fail_with_eperm_and_the_tool_goes_on(runner):
    out = probe(runner, """
        import ctypes, json
        libc = ctypes.CDLL(None, use_errno=True)
        res = {}
        for name, nr in [("ptrace", 101), ("process_vm_writev", 311), ("io_uring_enter", 426),
                         ("io_uring_register", 427), ("request_key", 249), ("pivot_root", 155),
                         ("move_mount", 429), ("fsopen", 430), ("fsmount", 432), ("open_tree", 428)]:
            r = libc.syscall(nr, 0, 0, 0, 0, 0, 0)
            res[name] = (r, ctypes.get_errno())
        print(json.dumps(res))
    """)
    assert out == {k: [-1, 1] for k in out}, out


def test_threads_still_work_under_the_filter(runner):
    # clone3 answers ENOSYS so the C library falls back to clone(2).
    out = probe(runner, """
        import threading, json, subprocess
        box = []
        t = threading.Thread(target=lambda: box.append(1)); t.start(); t.join()
        p = subprocess.run(["/bin/echo", "ok"], capture_output=True, text=True)
        print(json.dumps({"thread": box, "subprocess": p.stdout.strip()}))
    """)
    assert out == {"thread": [1], "subprocess": "ok"}


def test_missing_libseccomp_refuses_to_start(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_seccomp(name, *a, **k):
        if name == "pyseccomp":
            raise RuntimeError("Unable to find libseccomp")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_seccomp)
    with pytest.raises(SandboxError, match="libseccomp"):
        compile_filter()


V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = """\
9:name=systemd:/system.slice/aecl.service
8:pids:/system.slice/aecl.service
4:memory:/system.slice/aecl.service
2:cpu,cpuacct:/system.slice/aecl.service
0::/system.slice/aecl.service
"""


def test_cgroup_hierarchies_are_found_on_hybrid_v1_v2():
    found = own_cgroup_dirs(V1_MOUNTINFO, V1_CGROUP)
    assert (1, frozenset({"cpu", "cpuacct"}), Path("/sys/fs/cgroup/cpu,cpuacct/system.slice/aecl.service")) in found
    assert (1, frozenset({"memory"}), Path("/sys/fs/cgroup/memory/system.slice/aecl.service")) in found
    assert (1, frozenset({"pids"}), Path("/sys/fs/cgroup/pids/system.slice/aecl.service")) in found
    assert (2, frozenset(), Path("/sys/fs/cgroup/unified/system.slice/aecl.service")) in found
    assert len(found) == 4  # name=systemd carries no controller of interest


def test_cgroup_hierarchy_is_found_on_pure_v2_and_under_a_namespaced_mount():
    mi = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    assert own_cgroup_dirs(mi, "0::/system.slice/aecl.service\n") == [
        (2, frozenset(), Path("/sys/fs/cgroup/system.slice/aecl.service"))]
    # A container whose cgroup mount's root is its own cgroup.
    mi = "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    assert own_cgroup_dirs(mi, "0::/kubepods/pod1/app\n") == [(2, frozenset(), Path("/sys/fs/cgroup/app"))]


def test_cgroup_limit_files_for_v1_and_v2():
    lim = ResourceLimits(cpus=1.5, memory_bytes=256 << 20, pids=50)
    v2 = {f: v for f, v, _ in _limit_files(2, frozenset({"memory", "pids", "cpu"}), lim)}
    assert v2 == {"memory.max": str(256 << 20), "memory.swap.max": "0", "pids.max": "50", "cpu.max": "150000 100000"}
    v1 = {f: v for f, v, _ in _limit_files(1, frozenset({"memory", "pids", "cpu"}), lim)}
    assert v1 == {"memory.limit_in_bytes": str(256 << 20), "memory.memsw.limit_in_bytes": str(256 << 20),
                  "pids.max": "50", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "150000"}


def test_required_cgroups_refuse_to_start_where_there_are_none():
    with pytest.raises(SandboxError, match="requires cgroup limits"):
        CgroupSupport.detect(ResourceLimits(cgroups="required"), mountinfo="", proc_cgroup="0::/\n")
    sup = CgroupSupport.detect(ResourceLimits(cgroups="auto"), mountinfo="", proc_cgroup="0::/\n")
    assert not sup.enabled and set(sup.missing) == {"memory", "pids", "cpu"}


def test_startup_reports_which_limits_apply(caplog):
    caplog.set_level(logging.INFO, logger="enforcer.sandbox.runner")
    runner = BwrapRunner("/usr/bin/bwrap", PROFILE, 1 << 20)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("sandbox: "))
    assert "seccomp on" in line and "rlimits" in line and "cgroup limits" in line
    # This machine kind mounts the v1 memory, pids and cpu hierarchies.
    assert runner.cgroups.applied == {"cpu": "cgroup v1", "memory": "cgroup v1", "pids": "cgroup v1"}, line
    assert "memory (cgroup v1)" in line


def test_cgroups_off_is_reported_as_such(caplog):
    caplog.set_level(logging.INFO, logger="enforcer.sandbox.runner")
    runner = make_runner(limits={"cgroups": "off"})
    assert not runner.cgroups.enabled
    assert "cgroups are off in the profile" in runner.describe()


def test_no_probe_or_sandbox_cgroups_are_left_behind():
    runner = make_runner()
    for h in runner.cgroups.hierarchies:
        assert not [n for n in os.listdir(h.base) if n.startswith(f"probe-{os.getpid()}-")]
