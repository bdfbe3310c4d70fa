"""Reading a webhook's HMAC secret: a private file of the operator's.

Whoever reads the secret can forge notifications (a fake "approval pending"
pointing an approver anywhere), so the file gets the same treatment as the
service's other keys: a regular file (no symlink swapped in), 0600 or
stricter, and not empty.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from enforcer.errors import ConfigError

MAX_SECRET_BYTES = 4096


def require_private(path: Path, st: os.stat_result, what: str) -> None:
    """ConfigError unless `st` (of `path`) is a regular file only its owner
    can read. The same rule as enforcer.audit.keys.load_signing_key (see the
    report: it belongs there, shared, once extracted)."""
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: {what} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: {what} is accessible by group or others "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600` on it")


def load_secret(path: Path) -> bytes:
    """The secret is the file's text without surrounding whitespace (so a
    trailing newline from `echo` or an editor does not change it)."""
    what = "webhook secret"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"{path}: {what} not readable: {e.strerror}") from None
    try:
        require_private(path, os.fstat(fd), what)
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigError(f"{path}: {what} is longer than {MAX_SECRET_BYTES} bytes")
    secret = raw.strip()
    if not secret:
        raise ConfigError(f"{path}: {what} is empty; put a random secret in it (e.g. "
                          "`openssl rand -hex 32`) and give the same one to the receiver")
    return secret
