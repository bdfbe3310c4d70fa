"""serve.py: all five services as children, the ports file, the payments
key, stopping on a signal, stopping everything when one child dies."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.world.conftest import WORLD, call, read_line, stop

NAMES = ["payments", "records", "config", "webhooks", "mail"]


def children_of(pid: int) -> dict[int, str]:
    """pid -> command line of each live process whose parent is pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


@pytest.fixture
def serve(tmp_path):
    """serve(*args) -> (process, the path it printed); all stopped at the end."""
    procs, children = [], []

    def start(*args: str, expect_ready: bool = True):
        with open(tmp_path / f"serve.{len(procs)}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, str(WORLD / "serve.py"), *args], stdout=subprocess.PIPE,
                                    stderr=log, stdin=subprocess.DEVNULL, text=True)
        procs.append(proc)
        line = read_line(proc)
        children.extend(children_of(proc.pid))
        if expect_ready:
            assert line.startswith("ready "), (line, (tmp_path / f"serve.{len(procs) - 1}.log").read_text())
        return proc, Path(line.split(" ", 1)[1].strip()) if line else None

    try:
        yield start
    finally:
        for proc in procs:
            stop(proc)
        for pid in children:  # only if serve failed to stop them
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_serve_starts_the_world_and_sigterm_stops_it(serve, tmp_path):
    world_dir = tmp_path / "world"
    proc, ports_file = serve("--dir", str(world_dir))
    assert ports_file == world_dir / "world.json"
    world = json.loads(ports_file.read_text())
    assert set(world) == {*NAMES, "payments_key_file"}
    key_file = Path(world["payments_key_file"])
    assert key_file == world_dir / "payments.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text()
    assert key.endswith("\n") and key.count("\n") == 1
    key = key.strip()
    assert len(bytes.fromhex(key)) == 32

    for name in NAMES:
        assert call("GET", world[name] + "/health").body == {"ok": True}, name
    assert call("GET", world["payments"] + "/vendors").status == 401
    paid = call("POST", world["payments"] + "/transfers", {"vendor": "V-17", "amount": 100, "currency": "EUR"},
                headers={"Authorization": f"Bearer {key}"})
    assert paid.status == 201
    assert call("GET", world["records"] + "/records/INV-1001").status == 200
    for name in NAMES:
        db = world_dir / f"{name}.db"
        assert db.exists(), name

    children = children_of(proc.pid)
    assert len(children) == 5
    assert all(key not in cmdline for cmdline in children.values())
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except PermissionError:
            continue
        assert key.encode() not in environ

    assert stop(proc, signal.SIGTERM) == 0
    assert all(gone(pid) for pid in children)
    assert all(refused(world[name]) for name in NAMES)
    assert not ports_file.exists()


def test_sigint_stops_it_too_and_the_key_and_data_are_kept(serve, tmp_path):
    world_dir = tmp_path / "world"
    proc, ports_file = serve("--dir", str(world_dir))
    world = json.loads(ports_file.read_text())
    key = (world_dir / "payments.key").read_text()
    sent = call("POST", world["mail"] + "/send", {"to": "ap@example.com", "subject": "s", "body": "b"})
    assert sent.status == 201
    children = children_of(proc.pid)
    assert stop(proc, signal.SIGINT) == 0
    assert all(gone(pid) for pid in children)

    proc, ports_file = serve("--dir", str(world_dir))
    world = json.loads(ports_file.read_text())
    assert (world_dir / "payments.key").read_text() == key
    assert [m["message_id"] for m in call("GET", world["mail"] + "/outbox").body["messages"]] == \
        [sent.body["message_id"]]
    assert stop(proc) == 0


def test_a_dead_child_stops_the_others_and_serve_fails(serve, tmp_path):
    proc, ports_file = serve("--dir", str(tmp_path / "world"))
    world = json.loads(ports_file.read_text())
    children = children_of(proc.pid)
    victim = next(pid for pid, cmd in children.items() if "records.py" in cmd)
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=60) == 1
    assert all(gone(pid) for pid in children)
    assert all(refused(world[name]) for name in NAMES)
    log = (tmp_path / "serve.0.log").read_text()
    assert "records exited with status -9; stopping the others" in log


def test_ports_file_option_and_fixed_ports(serve, tmp_path):
    base = None
    for candidate in range(20000 + os.getpid() % 20000, 60000, 97):
        socks = []
        try:
            for i in range(5):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", candidate + i))
            base = candidate
            break
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    assert base is not None
    ports_file = tmp_path / "elsewhere" / "ports.json"
    proc, printed = serve("--dir", str(tmp_path / "world"), "--ports-file", str(ports_file),
                          "--base-port", str(base))
    assert printed == ports_file
    world = json.loads(ports_file.read_text())
    assert [world[name] for name in NAMES] == [f"http://127.0.0.1:{base + i}" for i in range(5)]
    assert call("GET", world["webhooks"] + "/health").status == 200
    assert not (tmp_path / "world" / "world.json").exists()
    assert stop(proc) == 0


def test_a_service_that_cannot_start_fails_serve(serve, tmp_path):
    world_dir = tmp_path / "world"
    world_dir.mkdir()
    (world_dir / "records.db").write_text("this is not a database")
    proc, printed = serve("--dir", str(world_dir), expect_ready=False)
    assert printed is None
    assert proc.wait(timeout=60) == 1
    assert not (world_dir / "world.json").exists()
    log = (tmp_path / "serve.0.log").read_text()
    assert "records did not start" in log
    assert children_of(proc.pid) == {}


def test_an_empty_key_file_is_refused(tmp_path):
    world_dir = tmp_path / "world"
    world_dir.mkdir()
    (world_dir / "payments.key").write_text("")
    result = subprocess.run([sys.executable, str(WORLD / "serve.py"), "--dir", str(world_dir)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "is empty" in result.stderr
    assert result.stdout == ""
