"""API keys: shown once at creation, stored only as a hash.

A key reads `aecl_<key_id>_<secret>`: the key id (12 lowercase hex digits, 48
random bits) names the key in logs, hash files and messages; the secret (32
random bytes, base64url without padding: 43 characters) is what proves
possession and is never written anywhere but the one key file handed to its
owner. Because the secret carries 256 bits of entropy, a plain SHA-256 of the
key text is a sufficient stored verifier: there is nothing to brute-force, so
a slow password hash would only cost latency on every call.

Hash files hold one principal's keys, `{kind, id, api_keys: [...]}`, so
rotating a key is rewriting one small file (atomically: a reader sees the old
file or the new one, never half of either).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from enforcer.errors import ConfigError, Unauthenticated

PREFIX = "aecl"
KINDS = ("agent", "approver", "admin")
SECRET_BYTES = 32
KEY_ID_RE = re.compile(r"\A[0-9a-f]{12}\Z")
SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
# The manifest name rule (enforcer.manifests.NAME_RE), repeated rather than
# imported: manifests imports enforcer.identity, and this module must not
# import manifests back.
NAME_RE = re.compile(r"\A[A-Za-z][A-Za-z0-9_.:-]{0,127}\Z")
# 32 bytes in unpadded base64url: 43 characters, the last one carrying only
# 4 significant bits (so one of A, E, I, ..., w: a canonical encoding).
SECRET_RE = re.compile(r"\A[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]\Z")
KEY_HASH_FIELDS = ("key_id", "sha256", "created_at")
HASH_FILE_FIELDS = ("kind", "id", "api_keys")


def _parse_time(value: str) -> float:
    """Epoch seconds of an RFC 3339 time with an explicit offset."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("no UTC offset")
    return parsed.timestamp()


def format_time(ts: float) -> str:
    """RFC 3339 UTC to the second, e.g. 2026-12-01T23:00:00Z."""
    return datetime.fromtimestamp(math.floor(ts * 1e6) / 1e6, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class KeyHash:
    """What the service keeps of one key: its id, the SHA-256 (hex) of the
    whole key text (utf-8), and when it was created."""

    key_id: str
    sha256: str
    created_at: str

    @property
    def created_ts(self) -> float:
        """`created_at` in epoch seconds."""
        return _parse_time(self.created_at)

    def to_dict(self) -> dict[str, str]:
        return {"key_id": self.key_id, "sha256": self.sha256, "created_at": self.created_at}

    @classmethod
    def from_dict(cls, d: Any) -> KeyHash:
        """Strict: exactly the three fields, each well formed; a ValueError
        names the offending field."""
        if not isinstance(d, Mapping):
            raise ValueError("a key hash must be a mapping with key_id, sha256 and created_at")
        keys = set(d)
        if keys != set(KEY_HASH_FIELDS):
            missing = sorted(set(KEY_HASH_FIELDS) - keys)
            extra = sorted(str(k) for k in keys - set(KEY_HASH_FIELDS))
            raise ValueError(f"key hash fields: missing {missing}, unexpected {extra}")
        key_id, digest, created_at = d["key_id"], d["sha256"], d["created_at"]
        if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
            raise ValueError("key_id: expected 12 lowercase hex digits")
        if not isinstance(digest, str) or not SHA256_RE.match(digest):
            raise ValueError("sha256: expected 64 lowercase hex digits")
        # A str only: an unquoted YAML timestamp would arrive as a datetime,
        # and such a file was not written by write_hash_file.
        if not isinstance(created_at, str):
            raise ValueError("created_at: expected an RFC 3339 time as a string")
        try:
            _parse_time(created_at)
        except ValueError as e:
            raise ValueError(f"created_at: not an RFC 3339 time with a UTC offset ({e})") from None
        return cls(key_id=key_id, sha256=digest, created_at=created_at)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def generate_key(now: float | None = None) -> tuple[str, KeyHash]:
    """A fresh key: its text (give it to its owner, once) and its hash (keep
    that)."""
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode("ascii")
    text = f"{PREFIX}_{key_id}_{secret}"
    created = format_time(time.time() if now is None else now)
    return text, KeyHash(key_id=key_id, sha256=_digest(text), created_at=created)


def parse_key(text: str) -> str:
    """The key id of a well-formed key text; Unauthenticated
    ("malformed_credential") otherwise. Splits at the first two `_` only: the
    secret itself may contain `_`."""
    parts = text.split("_", 2) if isinstance(text, str) else []
    if (
        len(parts) != 3
        or parts[0] != PREFIX
        or not KEY_ID_RE.match(parts[1])
        or not SECRET_RE.match(parts[2])
    ):
        # Never echo the text: it may be a real key with a typo.
        raise Unauthenticated("malformed_credential", "the API key is not of the form aecl_<key id>_<secret>")
    return parts[1]


def check_key(text: str, known: Mapping[str, KeyHash]) -> KeyHash:
    """The stored hash `text` matches, or Unauthenticated: "malformed_credential",
    "unknown_key" (no such key id: never issued or revoked) or "bad_credential"
    (right id, wrong secret). Messages name the key id, never the secret."""
    key_id = parse_key(text)
    stored = known.get(key_id)
    if stored is None:
        raise Unauthenticated("unknown_key", f"API key {key_id} is not known (never issued, or revoked)")
    if not hmac.compare_digest(_digest(text), stored.sha256):
        raise Unauthenticated("bad_credential", f"API key {key_id}: the secret does not match")
    return stored


def hash_file_path(credentials_dir: Path, kind: str, principal_id: str) -> Path:
    """Where a principal's key hashes live: <dir>/hashes/<kind>.<id>.yaml."""
    _check_principal(kind, principal_id)
    return credentials_dir / "hashes" / f"{kind}.{principal_id}.yaml"


def _check_principal(kind: str, principal_id: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    # The id becomes part of a file name: the manifest name rule keeps out
    # '/', '..' and anything else a path could make use of.
    if not isinstance(principal_id, str) or not NAME_RE.fullmatch(principal_id):
        raise ValueError(f"not a valid principal id: {principal_id!r}")


def make_private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parents with mode 0700 (Path.mkdir
    would give the parents the umask's default)."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)


def write_hash_file(path: Path, kind: str, principal_id: str, hashes: Iterable[KeyHash]) -> None:
    """Write a principal's hash file atomically (temp file, fsync, rename),
    mode 0600, creating its parent directories 0700."""
    _check_principal(kind, principal_id)
    hashes = list(hashes)
    ids = [h.key_id for h in hashes]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate key ids in one hash file")
    document = {"kind": kind, "id": principal_id, "api_keys": [h.to_dict() for h in hashes]}
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    make_private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def read_hash_file(path: Path, *, kind: str | None = None, principal_id: str | None = None) -> list[KeyHash]:
    """The key hashes of one hash file, validated strictly; ConfigError naming
    the file on any problem. With `kind`/`principal_id`, the file must also be
    for that principal (a file copied under another name is refused)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the key hash file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the key hash file is not UTF-8") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict) or set(doc) != set(HASH_FILE_FIELDS):
        raise ConfigError(f"{path}: a key hash file is a mapping with exactly kind, id and api_keys")
    if doc["kind"] not in KINDS:
        raise ConfigError(f"{path}: field 'kind': must be one of {', '.join(KINDS)}")
    if not isinstance(doc["id"], str) or not NAME_RE.fullmatch(doc["id"]):
        raise ConfigError(f"{path}: field 'id': not a valid principal id")
    if kind is not None and doc["kind"] != kind:
        raise ConfigError(f"{path}: field 'kind': is {doc['kind']!r}, expected {kind!r}")
    if principal_id is not None and doc["id"] != principal_id:
        raise ConfigError(f"{path}: field 'id': is {doc['id']!r}, expected {principal_id!r}")
    if not isinstance(doc["api_keys"], list):
        raise ConfigError(f"{path}: field 'api_keys': must be a list")
    hashes: list[KeyHash] = []
    seen: set[str] = set()
    for i, entry in enumerate(doc["api_keys"]):
        try:
            h = KeyHash.from_dict(entry)
        except ValueError as e:
            raise ConfigError(f"{path}: field 'api_keys.{i}': {e}") from None
        if h.key_id in seen:
            raise ConfigError(f"{path}: field 'api_keys.{i}': duplicate key_id {h.key_id}")
        seen.add(h.key_id)
        hashes.append(h)
    return hashes


def write_key_file(path: Path, key_text: str) -> None:
    """Hand a key to its owner: one line, mode 0600 from creation on, and
    never over an existing file (FileExistsError)."""
    if "\n" in key_text or "\r" in key_text:
        raise ValueError("a key text is one line")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key_text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)  # a umask can narrow the creation mode, e.g. to 0400
