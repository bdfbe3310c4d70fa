"""Server-side console sessions and the CSRF tokens that go with them.

A session is a random id (the cookie's only content) mapped, in memory, to
the approver who logged in, the API key that proved it, a CSRF token and an
expiry. Nothing about the approver is in the cookie, so a cookie cannot be
forged or edited, and a restart logs everyone out.

A session is valid only while its key is still in the directory exactly as
it was at login (same id, owner, role and hash): revoking or replacing the
key, or a reload that drops it, ends the session at its next request.

Before a session exists, the login form is protected by a login CSRF
token: a random pre-session cookie and, in the form, its HMAC under a
per-process secret. A cross-site page cannot read the cookie, so it cannot
produce the matching form value (and cannot log a victim into the
attacker's account).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from enforcer.audit.records import Principal
from enforcer.identity.directory import Credential

SESSION_COOKIE = "aecl_session"
LOGIN_COOKIE = "aecl_login"
# Every live session is kept in memory; past this many, the oldest go first
# (a flood of logins cannot exhaust the service's memory).
MAX_SESSIONS = 10_000
TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def tokens_equal(expected: str, presented: object) -> bool:
    """Constant-time comparison; anything but a non-empty str is unequal."""
    if not isinstance(presented, str) or not presented or not expected:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


@dataclass(frozen=True)
class Session:
    session_id: str
    principal: Principal
    credential: Credential  # the directory's entry for the key at login
    csrf_token: str
    created_at: float
    expires_at: float


class SessionStore:
    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.time,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}  # insertion order = age

    def create(self, principal: Principal, credential: Credential) -> Session:
        now = self.clock()
        self._sweep(now)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.pop(next(iter(self._sessions)))
        s = Session(new_token(), principal, credential, new_token(), now, now + self.ttl_s)
        self._sessions[s.session_id] = s
        return s

    def get(self, session_id: str | None, keys: Mapping[str, Credential]) -> Session | None:
        """The live session of this cookie value, or None (unknown, expired,
        or its key no longer in the directory as it was: then it is dropped)."""
        if not session_id:
            return None
        s = self._sessions.get(session_id)
        if s is None:
            return None
        key_id = s.credential.key.key_id
        if s.expires_at <= self.clock() or keys.get(key_id) != s.credential:
            self._sessions.pop(session_id, None)
            return None
        return s

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _sweep(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[sid]


class LoginCsrf:
    """Signed double-submit token for the login form (no session yet)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def form_token(self, cookie_value: str) -> str:
        return hmac.new(self._secret, b"login:" + cookie_value.encode(), hashlib.sha256).hexdigest()

    def check(self, cookie_value: object, form_value: object) -> bool:
        if not isinstance(cookie_value, str) or len(cookie_value) < 16:
            return False
        return tokens_equal(self.form_token(cookie_value), form_value)


__all__ = ["LOGIN_COOKIE", "SESSION_COOKIE", "LoginCsrf", "Session", "SessionStore", "new_token", "tokens_equal"]
