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


def test_a_corrupt_state_database_names_its_file(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "state.db").write_bytes(b"not a database at all " * 200)
    r = serve(config)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(tmp_path / "state.db") in r.stderr and "state database" in r.stderr


def test_an_audit_log_edited_while_stopped_refuses_to_start(tmp_path):
    import json

    from enforcer.audit.keys import load_signing_key
    from enforcer.audit.log import AuditLog

    config = write_config(tmp_path)
    log = AuditLog(tmp_path / "audit.jsonl", load_signing_key(tmp_path / "keys" / "audit.key"))
    for i in range(5):
        log.append({"kind": "test", "i": i})
    log.close()
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"i":2', b'"i":7')
    (tmp_path / "audit.jsonl").write_bytes(b"".join(lines))
    r = serve(config)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "entry 2 was changed" in r.stderr and json.dumps(str(tmp_path / "audit.jsonl"))[1:-1] in r.stderr
