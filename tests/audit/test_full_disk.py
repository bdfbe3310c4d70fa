"""A full disk, for real: the log lives on a tiny tmpfs mounted by the test
(needs root, as CI runs). A failed batch leaves no torn line behind, and
the log recovers on its own once space is freed, without a restart."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

from enforcer.audit.keys import generate_keypair, load_public_key, load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.audit.verify import verify_log
from enforcer.errors import AuditUnavailable


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {out.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path):
    """Fill the filesystem to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_full_disk_leaves_no_torn_line_and_recovers_once_space_is_freed(tiny_fs, tmp_path):
    priv, pub = generate_keypair(tmp_path / "keys")
    path = tiny_fs / "audit.jsonl"
    log = AuditLog(path, load_signing_key(priv), checkpoint_interval_s=3600)
    recovered = []
    log.on_recover = lambda: recovered.append(True)
    try:
        for i in range(10):
            log.append({"kind": "test", "i": i})
        fill(tiny_fs / "filler")
        with pytest.raises(AuditUnavailable, match="retrying once space is freed"):
            log.append({"kind": "test", "i": "big", "pad": "x" * 8000})
        # The partial batch was cut back: no torn line, nothing of it left.
        # (The writer's recovery probe may meanwhile have appended a small
        # checkpoint into the file's last page: that write had room.)
        data = path.read_bytes()
        assert data.endswith(b"}\n") and b"x" * 100 not in data
        with pytest.raises(AuditUnavailable):
            log.append({"kind": "test", "i": "refused while full"})
        os.unlink(tiny_fs / "filler")
        until(lambda: recovered)
        entry = log.append({"kind": "test", "i": "after"})
        assert entry.seq == log.size - 1
    finally:
        log.close()
    verify_log(path, [load_public_key(pub)])


def test_another_write_error_says_a_restart_is_needed(tmp_path, monkeypatch):
    priv, _ = generate_keypair(tmp_path / "keys")
    log = AuditLog(tmp_path / "audit.jsonl", load_signing_key(priv))
    try:
        real = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
        with pytest.raises(AuditUnavailable, match="restart the service"):
            log.append({"x": 1})
        monkeypatch.setattr(os, "fsync", real)
        time.sleep(1.5)  # longer than the recovery interval: nothing recovers an I/O error
        with pytest.raises(AuditUnavailable):
            log.append({"x": 2})
    finally:
        log.close()
