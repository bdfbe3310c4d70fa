"""Startup problems are one clear line and exit status 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.conftest import REPO, free_port, write_config


def serve(config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", "serve", "--config", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def test_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = serve(write_config(tmp_path, listen=f"127.0.0.1:{port}"))
    assert r.returncode == 2 and "listen: cannot listen on" in r.stderr and "Traceback" not in r.stderr


def test_metrics_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = serve(write_config(tmp_path, listen=f"127.0.0.1:{free_port()}", metrics={"listen": f"127.0.0.1:{port}"}))
    assert r.returncode == 2 and "metrics.listen: cannot serve metrics" in r.stderr and "Traceback" not in r.stderr


def test_bad_config_names_the_field(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text() + "lisen: 1\n")
    r = serve(config)
    assert r.returncode == 2 and "lisen" in r.stderr and "Traceback" not in r.stderr
