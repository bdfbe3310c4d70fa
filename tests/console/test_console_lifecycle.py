"""The console's listener as part of `aecl serve`: a busy port is a clear
start-up error, and stopping the service ends open event streams."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.conftest import REPO, Service, write_config
from tests.console.conftest import login


def test_a_busy_console_port_stops_startup_naming_console_listen(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = write_config(tmp_path / "svc", console={"listen": f"127.0.0.1:{port}"})
        # the bound on waiting is for a hung process, not a claim about speed
        r = subprocess.run([sys.executable, "-m", "enforcer", "serve", "--config", str(config)], cwd=REPO,
                           capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode != 0
    assert "console.listen" in r.stderr and f"127.0.0.1:{port}" in r.stderr


def test_stopping_the_service_ends_open_streams_and_the_stop_is_logged(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    svc = Service(write_config(tmp_path / "svc", console={"listen": f"127.0.0.1:{port}"}))
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        assert login(c, svc.key("approver")).status_code == 303
        opened, lines = threading.Event(), []

        def read() -> None:
            with c.stream("GET", "/events") as r:
                for line in r.iter_lines():
                    lines.append(line)
                    opened.set()
            lines.append("<closed>")

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert opened.wait(60)
    finally:
        svc.stop()
    reader.join(60)
    assert not reader.is_alive() and lines[-1] == "<closed>"
    assert svc.proc.returncode == 0
    records = [json.loads(x)["record"] for x in svc.log_lines()]
    assert [r.get("event") for r in records if r["kind"] == "service"][-1] == "stop"
