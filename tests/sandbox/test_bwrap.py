"""The sandbox basics, for real under bubblewrap: the tool contract, no
writes outside its tmpfs, none of the service's environment, the output cap.
The network, timeout and resource cases are in test_escape.py and
test_limits.py."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest

from enforcer.sandbox.profile import SandboxProfile, load_profile
from enforcer.sandbox.runner import BwrapRunner
from tests.conftest import REPO, require_bwrap

PROFILE = load_profile(REPO / "enforcer" / "sandbox" / "profiles" / "default.yaml")


@pytest.fixture
def runner() -> BwrapRunner:
    require_bwrap()
    return BwrapRunner("/usr/bin/bwrap", PROFILE, max_output_bytes=1 << 20)


def run_py(runner: BwrapRunner, code: str, timeout: float = 20, stdin: bytes = b"{}"):
    cmd = ["/usr/bin/python3", "-I", "-c", textwrap.dedent(code)]
    return asyncio.run(runner.run(cmd, stdin, timeout, None))


def test_tool_gets_args_on_stdin_and_answers_on_stdout(runner):
    r = run_py(runner, "import json,sys; a=json.load(sys.stdin); print(json.dumps({'got': a}))",
               stdin=b'{"x": 1}')
    assert r.exit_code == 0 and json.loads(r.stdout) == {"got": {"x": 1}}
    assert r.sandbox_id.startswith("sbx_")


def test_cannot_write_outside_its_tmpfs(runner, tmp_path):
    r = run_py(runner, """
        import json
        res = {}
        for p in ["/usr/aecl-probe", "/opt/aecl-probe", "/aecl-probe", "/proc/aecl-probe", "/tmp/ok"]:
            try:
                open(p, "w").write("x"); res[p] = "written"
            except OSError as e:
                res[p] = e.strerror
        print(json.dumps(res))
    """)
    res = json.loads(r.stdout)
    assert res.pop("/tmp/ok") == "written"
    assert all(v != "written" for v in res.values()), res
    assert not Path("/usr/aecl-probe").exists()


def test_sees_none_of_the_service_environment(runner, monkeypatch):
    secret = "svc-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("AECL_SERVICE_SECRET", secret)
    r = run_py(runner, """
        import os, json
        dump = {"environ": dict(os.environ), "proc": {}}
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                for f in ("environ", "cmdline"):
                    try:
                        dump["proc"][pid + "/" + f] = open(f"/proc/{pid}/{f}", "rb").read().decode(errors="replace")
                    except OSError as e:
                        dump["proc"][pid + "/" + f] = "unreadable: " + e.strerror
        print(json.dumps(dump))
    """)
    dump = json.loads(r.stdout)
    assert secret not in r.stdout.decode()
    assert set(dump["environ"]) <= set(PROFILE.env) | {"PWD", "LC_CTYPE", "SHLVL", "_"}
    assert len({k.split("/")[0] for k in dump["proc"]}) <= 3  # only the sandbox's own processes


def _cmdline_has(pid: str, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_output_over_the_cap_is_cut_and_marked(runner):
    small = BwrapRunner("/usr/bin/bwrap", PROFILE, max_output_bytes=1000)
    r = run_py(small, "import sys; sys.stdout.write('x' * 100000); sys.stdout.flush()")
    assert r.output_truncated and len(r.stdout) == 1000


def test_profile_refuses_binds_that_expose_host_state():
    for bad in ("/", "/etc", "/home", "/run", "/tmp", "/var"):
        with pytest.raises(ValueError):
            SandboxProfile(ro_binds=[bad])
