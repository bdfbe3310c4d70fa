"""Sessions, CSRF tokens and the redirect rule alone (enforcer.console.sessions, .security)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from enforcer.audit.records import Principal
from enforcer.console.security import safe_next
from enforcer.console.sessions import LoginCsrf, SessionStore, tokens_equal
from enforcer.identity.apikeys import KeyHash
from enforcer.identity.directory import Credential


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CRED = Credential("approver", "alice", KeyHash("k1", "ab" * 32, "2026-01-01T00:00:00Z"))
ALICE = Principal(kind="approver", id="alice", key_id="k1")


def store(ttl: float = 60.0, **kw) -> tuple[SessionStore, Clock]:
    clock = Clock()
    return SessionStore(ttl, clock=clock, **kw), clock


def test_a_session_lives_until_its_ttl() -> None:
    s, clock = store()
    session = s.create(ALICE, CRED)
    assert s.get(session.session_id, {"k1": CRED}) == session
    clock.now += 59.9
    assert s.get(session.session_id, {"k1": CRED}) is not None
    clock.now += 0.1
    assert s.get(session.session_id, {"k1": CRED}) is None
    assert len(s) == 0  # dropped, not kept


def test_a_session_ends_when_its_key_leaves_the_directory_or_changes() -> None:
    s, _ = store()
    session = s.create(ALICE, CRED)
    assert s.get(session.session_id, {}) is None
    session = s.create(ALICE, CRED)
    other_hash = Credential("approver", "alice", KeyHash("k1", "cd" * 32, "2026-01-01T00:00:00Z"))
    assert s.get(session.session_id, {"k1": other_hash}) is None
    session = s.create(ALICE, CRED)
    demoted = Credential("agent", "alice", CRED.key)
    assert s.get(session.session_id, {"k1": demoted}) is None


def test_unknown_empty_and_dropped_ids_are_no_session() -> None:
    s, _ = store()
    session = s.create(ALICE, CRED)
    for sid in (None, "", "x", session.session_id[:-1]):
        assert s.get(sid, {"k1": CRED}) is None
    s.drop(session.session_id)
    assert s.get(session.session_id, {"k1": CRED}) is None


def test_sessions_are_bounded_oldest_first() -> None:
    s, _ = store(max_sessions=3)
    made = [s.create(ALICE, CRED) for _ in range(5)]
    assert len(s) == 3
    assert [s.get(m.session_id, {"k1": CRED}) is not None for m in made] == [False, False, True, True, True]


def test_ids_and_csrf_tokens_are_unique_and_long() -> None:
    s, _ = store()
    made = [s.create(ALICE, CRED) for _ in range(200)]
    tokens = {m.session_id for m in made} | {m.csrf_token for m in made}
    assert len(tokens) == 400 and min(len(t) for t in tokens) >= 43  # 32 random bytes, base64url


@given(st.text(min_size=1), st.one_of(st.none(), st.integers(), st.text()))
def test_property_tokens_equal_only_for_the_same_text(expected: str, presented: object) -> None:
    assert tokens_equal(expected, presented) == (presented == expected)


def test_tokens_equal_refuses_empty() -> None:
    assert not tokens_equal("", "") and not tokens_equal("a", "")


@given(st.text(min_size=16, max_size=64, alphabet=st.characters(min_codepoint=33, max_codepoint=126)),
       st.text(max_size=80))
def test_property_the_login_token_matches_only_its_cookie(cookie: str, forged: str) -> None:
    csrf = LoginCsrf()
    assert csrf.check(cookie, csrf.form_token(cookie))
    assert not csrf.check(cookie + "x", csrf.form_token(cookie))
    assert csrf.check(cookie, forged) == (forged == csrf.form_token(cookie))
    assert not LoginCsrf().check(cookie, csrf.form_token(cookie))  # another process's secret


def test_the_login_token_needs_a_real_cookie() -> None:
    csrf = LoginCsrf()
    for cookie in (None, "", "short"):
        assert not csrf.check(cookie, csrf.form_token(cookie or ""))


def test_safe_next_keeps_local_paths_only() -> None:
    for ok in ("/", "/approvals/apr_1", "/approvals/apr_1/confirm?t=abc", "/tasks/t#x"):
        assert safe_next(ok) == ok
    for bad in (None, "", "approvals", "//evil.example", "/\\evil.example", "https://evil.example/",
                "javascript:alert(1)", "/ok\r\nSet-Cookie: x=1", "/\tx", "/a\\b", 3):
        assert safe_next(bad) == "/"


@given(st.text(max_size=200))
def test_property_safe_next_never_leaves_the_origin(target: str) -> None:
    out = safe_next(target)
    assert out.startswith("/") and not out.startswith("//") and "\\" not in out
    assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in out)
