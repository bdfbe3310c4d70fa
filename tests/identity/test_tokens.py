"""Task tokens: real Ed25519 keys and real PASETO v4.public tokens."""

from __future__ import annotations

import base64
import json
import stat
import time
from pathlib import Path

import pyseto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enforcer.errors import ConfigError, Unauthenticated
from enforcer.identity.tokens import (
    MAX_TOKEN_BYTES,
    TaskClaims,
    TokenIssuer,
    TokenVerifier,
    generate_token_key,
    load_token_key,
    load_token_public_key,
    token_key_id,
)

NOW = 1_796_166_000.0
SERVICE = "aecl"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def issuer(key) -> TokenIssuer:
    return TokenIssuer(key, SERVICE)


@pytest.fixture
def verifier(key) -> TokenVerifier:
    return TokenVerifier(key.public_key(), SERVICE)


def issue(issuer: TokenIssuer, **kw):
    args = {"agent_id": "finance_agent_v2", "task_id": "task_1", "scope": ("invoices:read",), "ttl_s": 900,
            "not_after": NOW + 3600, "now": NOW}
    args.update(kw)
    return issuer.issue(**args)


def refused(verifier: TokenVerifier, token: str, now: float = NOW + 1) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as e:
        verifier.verify(token, now)
    if len(token) > 12:  # (a short string such as "" is in any message)
        assert token not in str(e.value)
    return e.value


def test_issue_and_verify(issuer, verifier, key):
    t = issue(issuer)
    assert t.token.startswith("v4.public.")
    claims = verifier.verify(t.token, NOW + 1)
    assert claims == t.claims
    assert claims == TaskClaims(issuer=SERVICE, audience=SERVICE, agent_id="finance_agent_v2", task_id="task_1",
                                scope=("invoices:read",), issued_at=NOW, not_before=NOW, expires_at=NOW + 900,
                                token_id=claims.token_id, key_id=token_key_id(key.public_key()))
    assert claims.token_id.startswith("tok_") and len(claims.token_id) == 36
    assert claims.key_id.startswith("k4.") and len(claims.key_id) == 19


def test_wire_claims_and_footer(issuer, key):
    """The payload names and RFC 3339 times the PASETO spec asks for; the kid
    footer; and a plain PASETO library with our public key agrees."""
    t = issue(issuer)
    pub = pyseto.Key.new(4, "public", key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    decoded = pyseto.decode(pub, t.token)
    payload = json.loads(decoded.payload)
    assert set(payload) == {"iss", "aud", "sub", "tid", "scope", "iat", "nbf", "exp", "jti"}
    assert payload["exp"] == "2026-12-01T23:15:00.000000Z"
    assert payload["iat"] == payload["nbf"] == "2026-12-01T23:00:00.000000Z"
    assert payload["scope"] == ["invoices:read"]
    assert json.loads(decoded.footer) == {"kid": token_key_id(key.public_key())}


def test_token_ids_differ(issuer):
    assert issue(issuer).claims.token_id != issue(issuer).claims.token_id


def test_expiry_is_capped_at_the_tasks(issuer, verifier):
    t = issue(issuer, ttl_s=900, not_after=NOW + 100.7)
    assert t.claims.expires_at <= NOW + 100.7  # floored: never past the task's expiry
    assert t.claims.expires_at == pytest.approx(NOW + 100.7, abs=1e-6)
    assert verifier.verify(t.token, NOW + 100.6).expires_at == pytest.approx(t.claims.expires_at, abs=1e-6)
    assert refused(verifier, t.token, NOW + 100.7).reason == "expired"


def test_fractional_now_never_rounds_expiry_up(issuer, verifier):
    t = issue(issuer, now=NOW + 0.1234567, ttl_s=10.5, not_after=NOW + 1000)
    assert t.claims.expires_at <= NOW + 0.1234567 + 10.5
    assert t.claims.issued_at <= NOW + 0.1234567
    assert verifier.verify(t.token, NOW + 0.2).task_id == "task_1"


def test_already_expired_is_refused_at_issue(issuer):
    with pytest.raises(ValueError):
        issue(issuer, not_after=NOW)
    with pytest.raises(ValueError):
        issue(issuer, not_after=NOW + 0.0000004)  # floors to NOW (microseconds)
    with pytest.raises(ValueError):
        issue(issuer, ttl_s=0)


def test_expired(issuer, verifier):
    t = issue(issuer, ttl_s=60)
    assert verifier.verify(t.token, NOW + 59.999).agent_id == "finance_agent_v2"
    e = refused(verifier, t.token, NOW + 60)
    assert e.reason == "expired"


def test_not_yet_valid(issuer, verifier):
    t = issue(issuer, now=NOW + 500, not_after=NOW + 5000)
    assert refused(verifier, t.token, NOW).reason == "not_yet_valid"
    assert verifier.verify(t.token, NOW + 500).not_before == NOW + 500


def test_wrong_audience(issuer, key):
    other = TokenVerifier(key.public_key(), "other-service")
    assert refused(other, issue(issuer).token).reason == "wrong_audience"


def test_wrong_issuer(key):
    """aud right, iss wrong: only possible with our key, so forge it by hand."""
    pk = pyseto.Key.new(4, "public", key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    payload = {"iss": "someone-else", "aud": SERVICE, "sub": "a", "tid": "t", "scope": [],
               "iat": "2026-12-01T23:00:00Z", "nbf": "2026-12-01T23:00:00Z", "exp": "2026-12-01T23:15:00Z",
               "jti": "tok_x"}
    token = pyseto.encode(pk, json.dumps(payload).encode(),
                          json.dumps({"kid": token_key_id(key.public_key())}).encode()).decode()
    assert refused(TokenVerifier(key.public_key(), SERVICE), token).reason == "wrong_issuer"


def test_forged_with_another_key_is_bad_signature(key, verifier):
    """Same claims, same kid in the footer, another key: the signature does
    not verify (the kid alone proves nothing)."""
    mallory = Ed25519PrivateKey.generate()
    forger = TokenIssuer(mallory, SERVICE)
    forger.key_id = token_key_id(key.public_key())  # claim to be our key
    forger._footer = json.dumps({"kid": forger.key_id}, separators=(",", ":")).encode()
    t = issue(forger)
    assert refused(verifier, t.token).reason == "bad_signature"


def test_token_of_another_key_is_refused_by_kid(verifier):
    t = issue(TokenIssuer(Ed25519PrivateKey.generate(), SERVICE))
    assert refused(verifier, t.token).reason == "bad_signature"


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-10],
    lambda t: t[: len(t) // 2],
    lambda t: t.split(".")[0] + "." + t.split(".")[1] + "." + t.split(".")[2],  # footer dropped
    lambda t: t.replace("v4.public.", "v4.local.", 1),
    lambda t: t.replace("v4.public.", "v2.public.", 1),
    lambda t: t + ".",
    lambda t: t + "=",
    lambda t: " " + t,
    lambda t: "",
    lambda t: "v4.public.",
    lambda t: "v4.public..",
])
def test_truncated_or_mangled_is_malformed(issuer, verifier, mangle):
    t = mangle(issue(issuer).token)
    e = refused(verifier, t)
    assert e.reason in ("malformed_token", "bad_signature")


def test_truncated_body_is_malformed(issuer, verifier):
    t = issue(issuer).token
    head, body, footer = t[:10], t[10:].split(".")[0], t[10:].split(".")[1]
    assert refused(verifier, head + body[:40] + "." + footer).reason == "malformed_token"


def test_every_single_character_mutation_is_refused(issuer, key):
    """Each position of the token, each replaced by several characters
    (including ones Python's lenient base64 decoder would skip or whose spare
    bits it would ignore): never accepted, always Unauthenticated."""
    verifier = TokenVerifier(key.public_key(), SERVICE, cache_size=0)
    token = issue(issuer).token
    alphabet = "AQgwBb_-=.!+/ \x00é"
    tried = 0
    for i, original in enumerate(token):
        for c in alphabet:
            if c == original:
                continue
            mutated = token[:i] + c + token[i + 1:]
            with pytest.raises(Unauthenticated):
                verifier.verify(mutated, NOW + 1)
            tried += 1
    assert tried > 10 * len(token)


def test_spare_bits_of_the_last_character(issuer, verifier):
    """The body's last character carries unused low bits; a lenient decoder
    maps several characters to the same bytes. Such a variant is a different
    token text and must not verify."""
    token = issue(issuer).token
    head, body, footer = token[:10], *token[10:].split(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    variants = []
    for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        alt = body[:-1] + c
        if alt != body and base64.urlsafe_b64decode(alt + "=" * (-len(alt) % 4)) == raw:
            variants.append(alt)
    assert variants, "the test needs a body length with spare bits"
    for alt in variants:
        assert refused(verifier, f"{head}{alt}.{footer}").reason == "malformed_token"


def test_oversize_is_malformed_before_anything_else(verifier):
    big = "v4.public." + "A" * MAX_TOKEN_BYTES
    e = refused(verifier, big)
    assert e.reason == "malformed_token" and str(MAX_TOKEN_BYTES) in str(e)


def test_deeply_nested_footer_is_malformed(verifier):
    footer = base64.urlsafe_b64encode(b"[" * 3000).rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(b"x" * 100).rstrip(b"=").decode()
    assert refused(verifier, f"v4.public.{body}.{footer}").reason == "malformed_token"


@pytest.mark.parametrize("payload", [
    {"iss": SERVICE},  # claims missing
    {"iss": SERVICE, "aud": SERVICE, "sub": "a", "tid": "t", "scope": "x", "iat": "2026-12-01T23:00:00Z",
     "nbf": "2026-12-01T23:00:00Z", "exp": "2026-12-01T23:15:00Z", "jti": "j"},  # scope not a list
    {"iss": SERVICE, "aud": SERVICE, "sub": "a", "tid": "t", "scope": [], "iat": "2026-12-01T23:00:00Z",
     "nbf": "2026-12-01T23:00:00Z", "exp": 1796166900, "jti": "j"},  # exp a number
    {"iss": SERVICE, "aud": SERVICE, "sub": "a", "tid": "t", "scope": [], "iat": "2026-12-01T23:00:00Z",
     "nbf": "2026-12-01T23:00:00Z", "exp": "2026-12-01T23:15:00", "jti": "j"},  # no offset
    {"iss": SERVICE, "aud": SERVICE, "sub": "", "tid": "t", "scope": [], "iat": "2026-12-01T23:00:00Z",
     "nbf": "2026-12-01T23:00:00Z", "exp": "2026-12-01T23:15:00Z", "jti": "j"},  # empty sub
    {"iss": SERVICE, "aud": SERVICE, "sub": "a", "tid": "t", "scope": [], "iat": "2026-12-01T23:00:00Z",
     "nbf": "2026-12-01T23:00:00Z", "exp": "2026-12-01T23:15:00Z", "jti": "j", "admin": True},  # extra
    ["not", "an", "object"],
])
def test_signed_but_mistyped_claims_are_malformed(key, payload):
    pk = pyseto.Key.new(4, "public", key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    token = pyseto.encode(pk, json.dumps(payload).encode(),
                          json.dumps({"kid": token_key_id(key.public_key())}).encode()).decode()
    assert refused(TokenVerifier(key.public_key(), SERVICE), token).reason == "malformed_token"


def test_cache_hit_returns_equal_claims_and_still_checks_time(issuer, key):
    verifier = TokenVerifier(key.public_key(), SERVICE, cache_size=4)
    t = issue(issuer, ttl_s=60)
    first = verifier.verify(t.token, NOW + 1)
    assert t.token in verifier._cache
    second = verifier.verify(t.token, NOW + 2)
    assert second == first
    assert refused(verifier, t.token, NOW + 60).reason == "expired"  # cached, still expired
    assert refused(verifier, t.token, NOW - 1).reason == "not_yet_valid"


def test_cache_is_bounded_lru(issuer, key):
    verifier = TokenVerifier(key.public_key(), SERVICE, cache_size=3)
    tokens = [issue(issuer).token for _ in range(5)]
    for tok in tokens:
        verifier.verify(tok, NOW + 1)
    assert list(verifier._cache) == tokens[2:]
    verifier.verify(tokens[2], NOW + 1)  # touched: now most recent
    verifier.verify(tokens[0], NOW + 1)
    assert list(verifier._cache) == [tokens[4], tokens[2], tokens[0]]


def test_cache_never_holds_refused_tokens(issuer, key):
    verifier = TokenVerifier(key.public_key(), SERVICE)
    token = issue(issuer).token
    bad = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    refused(verifier, bad)
    refused(TokenVerifier(key.public_key(), "other"), token)
    assert bad not in verifier._cache and len(verifier._cache) == 0


def test_cache_hit_skips_the_signature_check(issuer, key, monkeypatch):
    """A repeated token is answered from the cache: no second signature
    check (how fast that is, is `make bench`'s to say, not a test's)."""
    import pyseto

    verifier = TokenVerifier(key.public_key(), SERVICE)
    token = issue(issuer).token
    first = verifier.verify(token, NOW + 1)

    def no_decode(*a, **kw):
        raise AssertionError("the cached token was verified again")
    monkeypatch.setattr(pyseto, "decode", no_decode)
    assert verifier.verify(token, NOW + 1) == first


def test_messages_never_contain_the_token(issuer, key):
    verifier = TokenVerifier(key.public_key(), "other")
    t = issue(issuer).token
    for tok, now in [(t, NOW + 1), (t[:-1], NOW + 1), (t + "x", NOW + 1)]:
        with pytest.raises(Unauthenticated) as e:
            verifier.verify(tok, now)
        assert t[10:40] not in str(e.value) and t[-30:] not in str(e.value)


def test_token_key_files(tmp_path):
    path = tmp_path / "token.key"
    pub = generate_token_key(path)
    assert pub == tmp_path / "token.pub"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    private = load_token_key(path)
    public = load_token_public_key(pub)
    assert token_key_id(private.public_key()) == token_key_id(public)
    t = TokenIssuer(private, SERVICE).issue(agent_id="a", task_id="t", scope=(), ttl_s=60, not_after=NOW + 60,
                                            now=NOW)
    assert TokenVerifier(public, SERVICE).verify(t.token, NOW).agent_id == "a"
    with pytest.raises(FileExistsError):
        generate_token_key(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_token_key_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "token.key"
    generate_token_key(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_token_key(path)


def test_token_key_must_be_ed25519(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "ec.key"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="Ed25519"):
        load_token_key(path)
    with pytest.raises(ConfigError, match="not readable"):
        load_token_key(tmp_path / "missing.key")


def test_token_key_generation_never_overwrites_a_public_key(tmp_path: Path):
    (tmp_path / "token.pub").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_token_key(tmp_path / "token.key")
    assert not (tmp_path / "token.key").exists()
    assert (tmp_path / "token.pub").read_text() == "keep me"
