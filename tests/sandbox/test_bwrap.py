"""The v1 sandbox, for real under bubblewrap: no network, no writes outside
its tmpfs, none of the service's environment, and a timeout that kills the
whole process tree."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from enforcer.sandbox.profile import SandboxProfile, load_profile
from enforcer.sandbox.runner import BwrapRunner
from tests.conftest import REPO, require_bwrap

PROFILE = load_profile(REPO / "sandbox" / "profiles" / "default.yaml")


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


def test_host_loopback_listener_is_unreachable(runner):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(srv.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    r = run_py(runner, f"""
        import socket, json
        out = {{}}
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2); out["tcp"] = "connected"
        except OSError as e:
            out["tcp"] = type(e).__name__
        try:
            socket.getaddrinfo("deb.debian.org", 80); out["dns"] = "resolved"
        except OSError as e:
            out["dns"] = type(e).__name__
        import os
        out["ifaces"] = sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else []
        print(json.dumps(out))
    """)
    t.join()
    srv.close()
    out = json.loads(r.stdout)
    assert out["tcp"] != "connected" and not accepted
    assert out["dns"] != "resolved"


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


def test_timeout_kills_the_tool_and_its_children(runner):
    marker = "aecl-orphan-" + uuid.uuid4().hex
    started = time.monotonic()
    r = run_py(runner, f"""
        import os, signal, time, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                os.execv("/usr/bin/python3", ["python3", "-c", "import time; time.sleep(600)", "{marker}"])
            os._exit(0)
        time.sleep(600)
    """, timeout=1.5)
    assert r.timed_out and r.exit_code is None or r.signal is not None
    assert time.monotonic() - started < 15
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, marker)]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, f"orphaned sandbox processes survived: {alive}"


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
