"""Reading a secret from a private file of the operator's: a webhook's
HMAC secret, the MCP front end's requestState key, an agent's API key for
`aecl mcp stdio`.

Whoever reads the secret can forge notifications (a fake "approval pending"
pointing an approver anywhere), so the file gets the same treatment as the
service's other keys: a regular file (no symlink swapped in), 0600 or
stricter, and not empty.
"""

from __future__ import annotations

import os
from pathlib import Path

from enforcer.audit.keys import require_private
from enforcer.errors import ConfigError

MAX_SECRET_BYTES = 4096


def load_secret(path: Path, what: str = "webhook secret") -> bytes:
    """The secret is the file's text without surrounding whitespace (so a
    trailing newline from `echo` or an editor does not change it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"{path}: {what} not readable: {e.strerror}") from None
    try:
        require_private(path, os.fstat(fd), what, error=ConfigError)
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
