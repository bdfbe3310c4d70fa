"""Task tokens: PASETO v4.public, signed with the service's own Ed25519 key.

Why PASETO and not JWT: a v4.public token is Ed25519 over a fixed
pre-authentication encoding, and the token carries no algorithm field. The
verifier never learns from the token how to check it, so there is nothing to
negotiate or downgrade: the JWT `alg: none` and RS256-to-HS256 key-confusion
class of attacks cannot be expressed. What is left to check is ours: the
footer's key id, the audience and issuer, and the validity window.

The token key is separate from the audit signing key: a token key is rotated
when a token may have leaked, the audit key when the trail's trust changes,
and neither rotation should force the other.

Verification is on the path of every RPC (budget: 0.1 ms). An Ed25519 check
costs about half of that, so a bounded LRU maps the exact token text to its
claims once signature, shape and audience have passed; the validity window is
checked on every call, cached or not, so caching never extends a token's life.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyseto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pyseto.exceptions import PysetoError, VerifyError

from enforcer.audit.keys import require_private
from enforcer.errors import ConfigError, Unauthenticated

HEADER = "v4.public."
MAX_TOKEN_BYTES = 4096
SIGNATURE_BYTES = 64
CLAIM_NAMES = frozenset({"iss", "aud", "sub", "tid", "scope", "iat", "nbf", "exp", "jti"})
_B64URL = re.compile(r"\A[A-Za-z0-9_-]+\Z")


@dataclass(frozen=True)
class TaskClaims:
    """What a verified token says: which agent may act for which task, with
    which scope, in which window (epoch seconds), under which key."""

    issuer: str
    audience: str
    agent_id: str
    task_id: str
    scope: tuple[str, ...]
    issued_at: float
    not_before: float
    expires_at: float
    token_id: str
    key_id: str


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: TaskClaims


def token_key_id(public: Ed25519PublicKey) -> str:
    """"k4." and the first 8 bytes (hex) of SHA-256 over the raw public key:
    the footer's `kid`, so a rotated-out key is refused by name."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "k4." + hashlib.sha256(raw).hexdigest()[:16]


def public_key_path(path: Path) -> Path:
    """The public key beside a private key file: <stem>.pub."""
    return path.with_name(path.stem + ".pub")


def generate_token_key(path: Path) -> Path:
    """Write a new Ed25519 private key (PKCS8 PEM, mode 0600 from creation,
    never over an existing file) at `path` and its public key (PEM
    SubjectPublicKeyInfo) beside it as <stem>.pub; return the public key's
    path (give it to anyone who verifies tokens offline)."""
    pub_path = public_key_path(path)
    if pub_path == path:
        raise ValueError(f"{path}: the private key file must not be named *.pub")
    if pub_path.exists():
        raise FileExistsError(f"{pub_path}: a public key already exists; refusing to overwrite it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(public_pem)
    return pub_path


def load_token_key(path: Path) -> Ed25519PrivateKey:
    """The token signing key; ConfigError if missing, not Ed25519, or
    readable by group or others (whoever reads it can mint tokens).

    Not enforcer.audit.keys.load_signing_key: that one raises the audit
    family's SigningKeyError and points at `aecl keygen`, the wrong advice for
    this key."""
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError(f"{path}: token signing key not readable: {e.strerror}") from None
    require_private(path, st, "token signing key", error=ConfigError, regular=False)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not a PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: the token signing key must be Ed25519")
    return key


def load_token_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot load the token public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: the token public key must be Ed25519")
    return key


def _micro(ts: float) -> float:
    """Floored to the microsecond, the precision of the claims: never later
    than `ts`. Microseconds, not seconds, so that a token issued just after
    a revocation is not dated before it."""
    return math.floor(ts * 1e6) / 1e6


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class TokenIssuer:
    """Mints task tokens for one service (iss = aud = service_id)."""

    def __init__(self, signing_key: Ed25519PrivateKey, service_id: str) -> None:
        if not service_id:
            raise ValueError("service_id must be non-empty")
        pem = signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        self._key = pyseto.Key.new(version=4, purpose="public", key=pem)
        self.service_id = service_id
        self.key_id = token_key_id(signing_key.public_key())
        self._footer = _compact({"kid": self.key_id})

    def issue(self, *, agent_id: str, task_id: str, scope: Sequence[str], ttl_s: float,
              not_after: float, now: float) -> IssuedToken:
        """A token valid from `now` for `ttl_s` seconds, but never past
        `not_after` (the task's own expiry). Times are microseconds, floored:
        the expiry is never rounded up past either bound. ValueError if the
        token would already be expired."""
        if not agent_id or not task_id:
            raise ValueError("agent_id and task_id must be non-empty")
        if isinstance(scope, str) or not all(isinstance(s, str) for s in scope):
            raise ValueError("scope must be a sequence of strings")
        if not (math.isfinite(now) and math.isfinite(ttl_s) and not math.isnan(not_after)):
            raise ValueError("now, ttl_s and not_after must be numbers")
        exp = _micro(min(now + ttl_s, not_after))
        iat = _micro(now)
        if exp <= iat:
            raise ValueError("the token would expire at or before its issue time")
        claims = TaskClaims(issuer=self.service_id, audience=self.service_id, agent_id=agent_id,
                            task_id=task_id, scope=tuple(scope), issued_at=float(iat), not_before=float(iat),
                            expires_at=float(exp), token_id="tok_" + uuid.uuid4().hex, key_id=self.key_id)
        payload = {"iss": claims.issuer, "aud": claims.audience, "sub": agent_id, "tid": task_id,
                   "scope": list(claims.scope), "iat": _rfc3339(iat), "nbf": _rfc3339(iat), "exp": _rfc3339(exp),
                   "jti": claims.token_id}
        token = pyseto.encode(self._key, _compact(payload), self._footer)
        return IssuedToken(token=token.decode("ascii"), claims=claims)


def _malformed(why: str) -> Unauthenticated:
    return Unauthenticated("malformed_token", f"malformed task token: {why}")


def _b64decode(part: str) -> bytes:
    """Strict unpadded base64url: only the alphabet, and only the canonical
    encoding. Python's decoder ignores stray characters and the spare low
    bits of the last one, so without this a changed character could still
    decode to the signed bytes and a mutated token text would verify."""
    if not _B64URL.match(part) or len(part) % 4 == 1:
        raise _malformed("not base64url")
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise _malformed("not base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != part:
        raise _malformed("not canonical base64url")
    return raw


def _time_claim(payload: dict, name: str) -> float:
    value = payload[name]
    if not isinstance(value, str):
        raise _malformed(f"claim {name} is not a time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _malformed(f"claim {name} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise _malformed(f"claim {name} has no UTC offset")
    return parsed.timestamp()


def _str_claim(payload: dict, name: str) -> str:
    value = payload[name]
    if not isinstance(value, str) or not value:
        raise _malformed(f"claim {name} is not a non-empty string")
    return value


class TokenVerifier:
    """Checks task tokens minted by this service's TokenIssuer (same key,
    same service_id). Safe to share across threads."""

    def __init__(self, public_key: Ed25519PublicKey, service_id: str, *, cache_size: int = 10_000) -> None:
        if not service_id:
            raise ValueError("service_id must be non-empty")
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        pem = public_key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        self._key = pyseto.Key.new(version=4, purpose="public", key=pem)
        self.service_id = service_id
        self.key_id = token_key_id(public_key)
        self._cache_size = cache_size
        self._cache: OrderedDict[str, TaskClaims] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: str, now: float) -> TaskClaims:
        """The token's claims if it is ours, for us, and valid at `now`;
        Unauthenticated otherwise (reasons: malformed_token, bad_signature,
        wrong_audience, wrong_issuer, not_yet_valid, expired). No message
        contains the token."""
        if not isinstance(token, str):
            raise _malformed("not a string")
        if len(token) > MAX_TOKEN_BYTES:  # first: bound the work done on untrusted input
            raise _malformed(f"longer than {MAX_TOKEN_BYTES} bytes")
        with self._lock:
            claims = self._cache.get(token)
            if claims is not None:
                self._cache.move_to_end(token)
        if claims is None:
            claims = self._check(token)
            if self._cache_size:
                with self._lock:
                    self._cache[token] = claims
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        if now < claims.not_before:
            raise Unauthenticated("not_yet_valid", f"task token {claims.token_id} is not valid yet")
        if now >= claims.expires_at:
            raise Unauthenticated("expired", f"task token {claims.token_id} has expired")
        return claims

    def _check(self, token: str) -> TaskClaims:
        """Everything but the validity window: shape, key id, signature,
        claims, issuer and audience."""
        if not token.startswith(HEADER):
            raise _malformed("not a v4.public token")
        parts = token[len(HEADER):].split(".")
        if len(parts) != 2:
            raise _malformed("expected a body and a footer")
        body, footer = _b64decode(parts[0]), _b64decode(parts[1])
        if len(body) <= SIGNATURE_BYTES:
            raise _malformed("body too short")
        try:
            footer_doc = json.loads(footer)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's limit
            raise _malformed("footer is not JSON") from None
        if not isinstance(footer_doc, dict) or set(footer_doc) != {"kid"} or not isinstance(footer_doc["kid"], str):
            raise _malformed('footer is not {"kid": ...}')
        kid = footer_doc["kid"]
        if kid != self.key_id:
            # The footer is signed too, so a foreign kid is someone else's key
            # (or a key rotated out): refused as a signature, not a format.
            raise Unauthenticated("bad_signature", "task token is signed by a key this service does not trust")
        try:
            # No deserializer: pyseto then checks only the signature, and the
            # claims (times included) are ours to check.
            decoded = pyseto.decode(self._key, token)
        except VerifyError:
            raise Unauthenticated("bad_signature", "task token signature does not verify") from None
        except (PysetoError, ValueError):
            raise _malformed("cannot be decoded") from None
        try:
            payload = json.loads(decoded.payload)
        except (ValueError, RecursionError):
            raise _malformed("payload is not JSON") from None
        if not isinstance(payload, dict):
            raise _malformed("payload is not a JSON object")
        if set(payload) != CLAIM_NAMES:
            # Only this service issues these tokens: a claim we would ignore
            # (or one missing) means another issuer or another version.
            raise _malformed("unexpected or missing claims")
        scope = payload["scope"]
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
            raise _malformed("claim scope is not a list of strings")
        claims = TaskClaims(
            issuer=_str_claim(payload, "iss"), audience=_str_claim(payload, "aud"),
            agent_id=_str_claim(payload, "sub"), task_id=_str_claim(payload, "tid"), scope=tuple(scope),
            issued_at=_time_claim(payload, "iat"), not_before=_time_claim(payload, "nbf"),
            expires_at=_time_claim(payload, "exp"), token_id=_str_claim(payload, "jti"), key_id=kid,
        )
        if claims.audience != self.service_id:
            raise Unauthenticated("wrong_audience",
                                  f"task token is for {claims.audience!r}, not {self.service_id!r}")
        if claims.issuer != self.service_id:
            raise Unauthenticated("wrong_issuer",
                                  f"task token was issued by {claims.issuer!r}, not {self.service_id!r}")
        return claims
