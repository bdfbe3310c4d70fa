"""The sandbox as the running service uses it: a real `aecl serve`, tools
from a registry, calls over gRPC. What the service holds stays out of reach,
the audit entry carries the sandbox's usage, and no sandbox outlives its task
loop or the service."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import json_format

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer.audit.keys import load_public_key
from enforcer.audit.verify import verify_file
from tests.conftest import Service, write_config
from tests.sandbox.conftest import host_pids_with
from tests.server.test_acceptance import decide, entry_for, execute, start

AGENT = "sandbox_probe_agent"

TOOLS = {
    "probe.py": """
        import json, os, sys
        args = json.load(sys.stdin)
        seen = {}
        for p in args["paths"]:
            try:
                os.stat(p); seen[p] = "visible"
            except OSError as e:
                seen[p] = e.strerror
        proc = ""
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                for f in ("environ", "cmdline"):
                    try:
                        proc += open(f"/proc/{pid}/{f}", "rb").read().decode(errors="replace")
                    except OSError:
                        pass
        print(json.dumps({"seen": seen, "proc": proc, "env": dict(os.environ)}))
    """,
    "sleep.py": """
        import json, sys, time
        time.sleep(json.load(sys.stdin).get("seconds", 60))
        print("{}")
    """,
    "flood.py": """
        import os
        block = b"x" * (1 << 20)
        for _ in range(1024):
            os.write(1, block)
    """,
}


def make_service(tmp: Path, marker: str, **sandbox) -> Service:
    tools = tmp / "tools"
    tools.mkdir(parents=True)
    for name, code in TOOLS.items():
        (tools / name).write_text(textwrap.dedent(code))
    py = ["/usr/bin/python3", "-I"]
    registry = {
        "tools_dir": str(tools),
        "tools": {
            "probe": {"command": py + ["/opt/aecl/tools/probe.py"], "access": "read"},
            "sleeper": {"command": py + ["/opt/aecl/tools/sleep.py", marker], "access": "read", "timeout_s": 120},
            "flood": {"command": py + ["/opt/aecl/tools/flood.py"], "access": "read"},
        },
    }
    (tmp / "tools.yaml").write_text(yaml.safe_dump(registry))
    agents = tmp / "agents"
    agents.mkdir()
    (agents / "probe.yaml").write_text(yaml.safe_dump({
        "agent_id": AGENT, "allowed_actions": ["probe", "sleeper", "flood"], "max_tool_calls_per_run": 1000}))
    return Service(write_config(tmp / "svc", agents_dir=str(agents), tool_registry=str(tmp / "tools.yaml"),
                                sandbox=sandbox))


def test_a_tool_sees_none_of_the_services_files_environment_or_secrets(tmp_path):
    marker = "aecl-" + uuid.uuid4().hex
    svc = make_service(tmp_path, marker)
    try:
        cfg = svc.config
        paths = [str(svc.config_path), cfg["audit"]["signing_key"], cfg["audit"]["path"],
                 cfg["state"]["sqlite_path"], str(Path(cfg["audit"]["signing_key"]).parent),
                 str(tmp_path), os.path.expanduser("~"), str(Path.cwd()), "/etc/passwd"]
        task = start(svc, agent=AGENT, goal="probe")
        r = execute(svc, task, "probe", {"paths": paths}, agent=AGENT)
        assert r.status == pb.EXECUTION_STATUS_SUCCEEDED, r.error
        out = json_format.MessageToDict(r.output)
        assert set(out["seen"].values()) == {"No such file or directory"}, out["seen"]
        assert "s3cr3t-service-env" not in out["proc"] and "AECL_TEST_SECRET" not in out["env"]
        record = entry_for(svc, r.event_id)
        assert record["sandbox_id"] == r.sandbox_id
        assert record["limits_hit"] == []
        assert record["resource_usage"]["cpu_time_ms"] > 0
        assert record["resource_usage"]["peak_memory_bytes"] > 1 << 20
    finally:
        svc.stop()
    log = svc.stderr_path.read_text()
    assert "sandbox: bubblewrap" in log and "seccomp on" in log and "cgroup limits" in log


def test_a_gigabyte_of_output_is_cut_while_the_service_keeps_answering(tmp_path):
    svc = make_service(tmp_path, "aecl-" + uuid.uuid4().hex)
    try:
        task = start(svc, agent=AGENT, goal="flood")
        result = {}
        t = threading.Thread(target=lambda: result.update(r=execute(svc, task, "flood", {}, agent=AGENT)))
        t.start()
        latencies = []
        while t.is_alive() and len(latencies) < 200:
            t0 = time.monotonic()
            d = decide(svc, task, "probe", {"paths": []}, agent=AGENT)
            latencies.append(time.monotonic() - t0)
            assert d.outcome == pb.OUTCOME_APPROVE
        t.join(30)
        r = result["r"]
        assert r.status == pb.EXECUTION_STATUS_FAILED and r.output_truncated
        assert "output cap" in r.error
        assert latencies and max(latencies) < 1.0, max(latencies)
        assert entry_for(svc, r.event_id)["limits_hit"] == ["output"]
    finally:
        svc.stop()


def test_the_task_loop_timeout_kills_a_running_sandbox(tmp_path):
    marker = "aecl-" + uuid.uuid4().hex
    svc = make_service(tmp_path, marker, task_timeout_s=3)
    try:
        task = start(svc, agent=AGENT, goal="sleep")
        t0 = time.monotonic()
        r = execute(svc, task, "sleeper", {"seconds": 60}, agent=AGENT)
        assert r.status == pb.EXECUTION_STATUS_FAILED and "timeout" in r.error
        assert time.monotonic() - t0 < 10
        assert not host_pids_with(marker)
        assert entry_for(svc, r.event_id)["limits_hit"] == ["timeout"]
        # And the expired task accepts no further call: its token ends with
        # the task, so the call is refused before any sandbox (and logged)...
        with pytest.raises(grpc.RpcError) as refused:
            execute(svc, task, "probe", {"paths": []}, agent=AGENT)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in refused.value.details()
        records = [json.loads(line)["record"] for line in svc.log_lines()]
        assert (records[-1]["kind"], records[-1]["rpc"], records[-1]["task_id"], records[-1]["refusal"]) == (
            "auth_refused", "Execute", task, "expired")
        assert [r for r in records if r["kind"] == "execution"] == [entry_for(svc, r.event_id)]
        # ...and its token cannot be renewed.
        with pytest.raises(grpc.RpcError) as over:
            svc.stub.RenewTaskToken(pb.RenewTaskTokenRequest(agent_id=AGENT, task_id=task))
        assert over.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        svc.stop()


def _start_sleeping_call(svc: Service, marker: str) -> threading.Thread:
    task = start(svc, agent=AGENT, goal="sleep")
    t = threading.Thread(target=lambda: _ignore_rpc_error(lambda: execute(svc, task, "sleeper", {"seconds": 60},
                                                                          agent=AGENT)))
    t.start()
    deadline = time.monotonic() + 15
    while not host_pids_with(marker):
        assert time.monotonic() < deadline, "the sandbox did not start"
        time.sleep(0.05)
    return t


def _ignore_rpc_error(fn) -> None:
    try:
        fn()
    except grpc.RpcError:
        pass


def _gone(marker: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while host_pids_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_killed_service_leaves_no_sandbox_behind(tmp_path):
    marker = "aecl-" + uuid.uuid4().hex
    svc = make_service(tmp_path, marker)
    try:
        t = _start_sleeping_call(svc, marker)
        os.kill(svc.proc.pid, signal.SIGKILL)
        svc.proc.wait(10)
        assert _gone(marker, 5), host_pids_with(marker)
        t.join(10)
    finally:
        svc.stop()


def test_a_service_shutdown_kills_every_sandbox(tmp_path):
    marker = "aecl-" + uuid.uuid4().hex
    svc = make_service(tmp_path, marker)
    try:
        t = _start_sleeping_call(svc, marker)
        svc.proc.terminate()
        svc.proc.wait(30)
        assert _gone(marker, 5), host_pids_with(marker)
        t.join(10)
    finally:
        svc.stop()
    # The interrupted call is logged as failed, and the log still verifies.
    records = [json.loads(line)["record"] for line in svc.log_lines()]
    [interrupted] = [r for r in records if r["kind"] == "execution"]
    assert interrupted["outcome"] == "failed" and interrupted["reason"].startswith("interrupted")
    # What really happened: the sandbox it had, how long it ran, and why it ended.
    assert interrupted["sandbox_id"].startswith("sbx_") and interrupted["duration_ms"] > 0
    assert interrupted["cause"] == "shutdown" or "shutdown" in interrupted["limits_hit"]
    assert verify_file(svc.audit_path, [load_public_key(svc.pubkey)]) == len(records)
    # ...and a new instance starts clean.
    again = Service(svc.config_path)
    try:
        assert not host_pids_with(marker)
    finally:
        again.stop()
