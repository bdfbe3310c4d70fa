"""Ed25519 signing keys for the audit log.

The private key file must be 0600 (or stricter): a key readable by group or
others is refused, because whoever can read it can forge the trail.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from enforcer.errors import SigningKeyError

PRIVATE_NAME = "audit.key"
PUBLIC_NAME = "audit.pub"


def raw_public_bytes(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256 over the raw public key, hex."""
    return hashlib.sha256(raw_public_bytes(public)).hexdigest()[:16]


def generate_keypair(directory: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / PRIVATE_NAME
    public_path = directory / PUBLIC_NAME
    if not overwrite and (private_path.exists() or public_path.exists()):
        raise SigningKeyError(f"{directory}: a key pair already exists; refusing to overwrite it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL|0600 at creation: the key is never on disk with wider permissions.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if overwrite else os.O_EXCL)
    fd = os.open(private_path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(private_path, 0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def require_private(
    path: Path,
    st: os.stat_result,
    what: str,
    *,
    error: type[Exception],
    regular: bool = True,
    subject: str | None = None,
    too_open: str = "is accessible by group or others (mode {mode}); run `chmod 600` on it",
) -> None:
    """Raise `error` unless `st` (of `path`) is a file only its owner can
    reach: no group or other bits (0600 or stricter) and, when `regular`, a
    regular file. The one rule for every secret the service reads (this
    signing key, the token key, connector credentials, webhook secrets).

    Refusing symlinks is the caller's part: open with O_NOFOLLOW and pass
    os.fstat of that descriptor. Messages read "<subject> is not a regular
    file" and "<subject> <too_open>", where `subject` defaults to
    "<path>: <what>" and `too_open` is formatted with the octal `mode`."""
    if subject is None:
        subject = f"{path}: {what}"
    if regular and not stat.S_ISREG(st.st_mode):
        raise error(f"{subject} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(f"{subject} " + too_open.format(mode=f"{stat.S_IMODE(st.st_mode):04o}"))


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        st = path.stat()
    except OSError as e:
        raise SigningKeyError(f"{path}: signing key not readable: {e.strerror} (create one with `aecl keygen`)") from e
    # regular=False: this path is stat()ed (symlinks followed), and a
    # non-regular file has always been left to fail at read time.
    require_private(path, st, "signing key", error=SigningKeyError, regular=False)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise SigningKeyError(f"{path}: not a PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
        raise SigningKeyError(f"{path}: cannot load public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 public key")
    return key
