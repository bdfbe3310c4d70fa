"""Authenticating one call: real Ed25519 task tokens, real API-key hashes, a
real directory and real revocations; only the client certificate is built
directly (as gRPC would hand it over once the chain verified)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.audit.records import Principal
from enforcer.errors import NotAuthorised, PermissionDenied, Unauthenticated
from enforcer.identity.apikeys import KeyHash, generate_key
from enforcer.identity.authenticate import (
    Authenticator,
    Presented,
    Proven,
    bearer,
    may_approve,
)
from enforcer.identity.certs import PeerCertificate
from enforcer.identity.directory import build_directory
from enforcer.identity.models import (
    AgentCredentials,
    ApiKeyEntry,
    CertificateIdentity,
    HumanPrincipal,
)
from enforcer.identity.revocations import Revocations
from enforcer.identity.tokens import TokenIssuer, TokenVerifier
from enforcer.manifests import AgentManifest
from enforcer.policy.holder import ActivePolicy, PolicyHolder
from enforcer.state.store import Revocation

NOW = 1_796_166_000.0
SERVICE = "aecl"
KEY_AT = NOW - 86_400  # when the API keys were made


def _entry(h: KeyHash) -> ApiKeyEntry:
    return ApiKeyEntry(key_id=h.key_id, sha256=h.sha256, created_at=h.created_at)


def _uri(kind: str, pid: str) -> str:
    return f"spiffe://aecl.dev/{kind}/{pid}"


def peer(uri: str | None = None, subject: str = "CN=someone,O=Example", not_before: float = NOW - 3600,
         fingerprint: str = "sha256:" + "ab" * 32) -> PeerCertificate:
    return PeerCertificate(uri_sans=(uri,) if uri else (), subject=subject, fingerprint=fingerprint,
                           not_before=not_before, not_after=NOW + 86_400)


class World:
    """agent_a (key + URI SAN certificate), agent_b (key), approver alice
    (key, runs agent_b), admin root (key + URI SAN), admin ops (subject)."""

    def __init__(self) -> None:
        self.signing = Ed25519PrivateKey.generate()
        self.issuer = TokenIssuer(self.signing, SERVICE)
        self.verifier = TokenVerifier(self.signing.public_key(), SERVICE)
        self.keys = {name: generate_key(KEY_AT) for name in ("agent_a", "agent_b", "alice", "root")}
        self.agents = {
            "agent_a": AgentManifest(agent_id="agent_a", credentials=AgentCredentials(
                api_keys=[_entry(self.keys["agent_a"][1])],
                certificate=CertificateIdentity(uri_san=_uri("agent", "agent_a")))),
            "agent_b": AgentManifest(agent_id="agent_b", credentials=AgentCredentials(
                api_keys=[_entry(self.keys["agent_b"][1])])),
        }
        approvers = [HumanPrincipal(id="alice", api_keys=[_entry(self.keys["alice"][1])],
                                    certificate=CertificateIdentity(uri_san=_uri("approver", "alice")),
                                    agent_ids=["agent_b"])]
        admins = [HumanPrincipal(id="root", api_keys=[_entry(self.keys["root"][1])],
                                 certificate=CertificateIdentity(uri_san=_uri("admin", "root"))),
                  HumanPrincipal(id="ops", certificate=CertificateIdentity(subject="CN=ops,O=Example"))]
        self.directory = build_directory(self.agents, approvers, admins, None)
        # The Authenticator reads policy.current.directory and .agents only.
        self.holder = PolicyHolder(ActivePolicy(engine=None, registry=None, policy_set=None,  # type: ignore[arg-type]
                                                agents=self.agents, directory=self.directory))
        self.revocations = Revocations()
        self.now = NOW
        self.auth = Authenticator(self.holder, self.verifier, self.revocations, clock=lambda: self.now)

    def key(self, name: str) -> str:
        return self.keys[name][0]

    def token(self, agent_id: str = "agent_a", task_id: str = "tsk_1", *, at: float = NOW - 10,
              issuer: TokenIssuer | None = None):
        return (issuer or self.issuer).issue(agent_id=agent_id, task_id=task_id, scope=("invoices:read",),
                                             ttl_s=900, not_after=at + 3600, now=at)


@pytest.fixture
def w() -> World:
    return World()


def with_bearer(value: str, cert: PeerCertificate | None = None) -> Presented:
    return Presented(authorization=(f"Bearer {value}",), peer=cert)


def refused(kind: type, reason: str, fn, *args):
    with pytest.raises(kind) as e:
        fn(*args)
    assert e.value.reason == reason, e.value.reason
    if kind is Unauthenticated:  # never confused with PERMISSION_DENIED
        assert not isinstance(e.value, PermissionDenied)
    return e.value


# -- bearer() ------------------------------------------------------------------


def test_bearer_takes_the_one_credential():
    assert bearer(Presented((), None)) is None
    assert bearer(Presented(("Bearer abc",), None)) == "abc"
    assert bearer(Presented(("bearer abc",), None)) == "abc"  # the scheme is case-insensitive
    assert bearer(Presented(("BEARER abc  ",), None)) == "abc"


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "abc", "Token abc",
                                   "Bearerabc", ""])
def test_bearer_refuses_a_malformed_authorization(value):
    refused(Unauthenticated, "malformed_authorization", bearer, Presented((value,), None))


def test_bearer_refuses_two_authorization_values_even_identical_ones():
    refused(Unauthenticated, "duplicate_authorization", bearer, Presented(("Bearer a", "Bearer a"), None))


# -- task_token ------------------------------------------------------------------


def test_a_valid_token_proves_its_agent_and_task(w):
    issued = w.token()
    proven = w.auth.task_token(with_bearer(issued.token), "agent_a", "tsk_1")
    assert proven == Proven(Principal(kind="agent", id="agent_a", token_id=issued.claims.token_id), issued.claims)
    # RPCs that name no task (ListTools, GetAgentPermissions)
    assert w.auth.task_token(with_bearer(issued.token), "agent_a", None).claims == issued.claims


def test_task_token_missing(w):
    refused(Unauthenticated, "missing_token", w.auth.task_token, Presented((), None), "agent_a", "tsk_1")


def test_task_token_duplicate_authorization(w):
    t = w.token().token
    refused(Unauthenticated, "duplicate_authorization", w.auth.task_token,
            Presented((f"Bearer {t}", f"Bearer {t}"), None), "agent_a", "tsk_1")


def test_task_token_malformed_scheme(w):
    refused(Unauthenticated, "malformed_authorization", w.auth.task_token,
            Presented((f"Basic {w.token().token}",), None), "agent_a", "tsk_1")


def test_an_api_key_is_not_a_task_token(w):
    refused(Unauthenticated, "malformed_token", w.auth.task_token, with_bearer(w.key("agent_a")), "agent_a", "tsk_1")


def test_agent_as_token_used_for_agent_b_is_wrong_agent_carrying_a(w):
    issued = w.token("agent_a")
    e = refused(NotAuthorised, "wrong_agent", w.auth.task_token, with_bearer(issued.token), "agent_b", "tsk_1")
    assert e.principal == Principal(kind="agent", id="agent_a", token_id=issued.claims.token_id)
    assert e.token_id == issued.claims.token_id
    assert issued.token not in str(e)


def test_a_token_used_for_another_task_is_wrong_task(w):
    issued = w.token(task_id="tsk_1")
    e = refused(NotAuthorised, "wrong_task", w.auth.task_token, with_bearer(issued.token), "agent_a", "tsk_2")
    assert e.principal.id == "agent_a" and e.token_id == issued.claims.token_id


def test_a_token_of_a_revoked_task_is_refused(w):
    issued = w.token(task_id="tsk_1")
    other = w.token(task_id="tsk_2")
    w.revocations.add(Revocation("task", "tsk_1", NOW - 5, "test"))
    e = refused(Unauthenticated, "revoked", w.auth.task_token, with_bearer(issued.token), "agent_a", "tsk_1")
    assert e.token_id == issued.claims.token_id and e.principal is None
    assert w.auth.task_token(with_bearer(other.token), "agent_a", "tsk_2").principal.id == "agent_a"


def test_a_revoked_agent_refuses_tokens_issued_before_and_accepts_those_issued_after(w):
    before = w.token(at=NOW - 10)
    w.revocations.add(Revocation("agent", "agent_a", NOW - 5, "test"))
    after = w.token(at=NOW - 1)
    refused(Unauthenticated, "revoked", w.auth.task_token, with_bearer(before.token), "agent_a", "tsk_1")
    assert w.auth.task_token(with_bearer(after.token), "agent_a", "tsk_1").claims == after.claims
    # another agent is unaffected
    b = w.token("agent_b", at=NOW - 10)
    assert w.auth.task_token(with_bearer(b.token), "agent_b", "tsk_1").principal.id == "agent_b"


def test_a_token_issued_at_the_revocation_instant_is_refused(w):
    issued = w.token(at=NOW - 5)
    w.revocations.add(Revocation("agent", "agent_a", issued.claims.issued_at, "test"))
    refused(Unauthenticated, "revoked", w.auth.task_token, with_bearer(issued.token), "agent_a", "tsk_1")


def test_revocation_is_checked_on_a_cached_token_too(w):
    issued = w.token()
    assert w.auth.task_token(with_bearer(issued.token), "agent_a", "tsk_1")  # now cached by the verifier
    w.revocations.add(Revocation("task", "tsk_1", NOW, "test"))
    refused(Unauthenticated, "revoked", w.auth.task_token, with_bearer(issued.token), "agent_a", "tsk_1")


def test_an_expired_token_is_unauthenticated(w):
    issued = w.token()
    w.now = issued.claims.expires_at
    refused(Unauthenticated, "expired", w.auth.task_token, with_bearer(issued.token), "agent_a", "tsk_1")


def test_a_token_signed_by_another_key_is_unauthenticated(w):
    forged = w.token(issuer=TokenIssuer(Ed25519PrivateKey.generate(), SERVICE))
    refused(Unauthenticated, "bad_signature", w.auth.task_token, with_bearer(forged.token), "agent_a", "tsk_1")


def test_a_token_of_an_agent_without_a_manifest_any_more_is_unauthenticated(w):
    issued = w.token("agent_gone")
    e = refused(Unauthenticated, "unknown_agent", w.auth.task_token, with_bearer(issued.token), "agent_gone",
                "tsk_1")
    assert e.token_id == issued.claims.token_id


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), raw=st.booleans())
def test_random_bearer_text_is_only_ever_unauthenticated(text, raw):
    """Property: whatever text arrives as the authorization value, the
    answer is UNAUTHENTICATED, never a crash or a PERMISSION_DENIED."""
    w = _SHARED
    value = text if raw else f"Bearer {text}"
    with pytest.raises(Unauthenticated) as e:
        w.auth.task_token(Presented((value,), None), "agent_a", "tsk_1")
    assert e.value.reason and not isinstance(e.value, PermissionDenied)


@settings(max_examples=200, deadline=None)
@given(body=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.", max_size=400))
def test_random_v4_public_shaped_text_is_only_ever_unauthenticated(body):
    w = _SHARED
    with pytest.raises(Unauthenticated):
        w.auth.task_token(with_bearer("v4.public." + body), "agent_a", "tsk_1")
    with pytest.raises(Unauthenticated):
        w.auth.role(with_bearer("v4.public." + body), "admin")


_SHARED = World()  # for the property tests (hypothesis runs them many times over one world)


# -- agent_credential (StartTask, RenewTaskToken) ---------------------------------------


def test_an_agents_key_proves_the_agent(w):
    proven = w.auth.agent_credential(Presented((), None), "agent_a", w.key("agent_a"))
    assert proven.principal == Principal(kind="agent", id="agent_a", key_id=w.keys["agent_a"][1].key_id)
    assert proven.claims is None


def test_another_agents_key_is_wrong_agent_carrying_the_keys_owner(w):
    e = refused(NotAuthorised, "wrong_agent", w.auth.agent_credential, Presented((), None), "agent_a",
                w.key("agent_b"))
    assert e.principal.id == "agent_b" and e.key_id == w.keys["agent_b"][1].key_id
    assert w.key("agent_b") not in str(e)


@pytest.mark.parametrize("who,kind", [("root", "admin"), ("alice", "approver")])
def test_a_persons_key_cannot_act_as_an_agent(w, who, kind):
    e = refused(NotAuthorised, "wrong_role", w.auth.agent_credential, Presented((), None), "agent_a", w.key(who))
    assert e.principal.kind == kind and e.principal.id == who


def test_an_unknown_or_malformed_key_is_unauthenticated_with_the_key_id_only_when_shaped(w):
    stranger, h = generate_key(NOW)
    e = refused(Unauthenticated, "unknown_key", w.auth.agent_credential, Presented((), None), "agent_a", stranger)
    assert e.key_id == h.key_id
    e = refused(Unauthenticated, "malformed_credential", w.auth.agent_credential, Presented((), None), "agent_a",
                "not-a-key")
    assert e.key_id is None


def test_no_key_and_no_certificate_is_missing_credential(w):
    refused(Unauthenticated, "missing_credential", w.auth.agent_credential, Presented((), None), "agent_a", "")


def test_a_certificate_naming_no_one_is_unknown_certificate(w):
    refused(Unauthenticated, "unknown_certificate", w.auth.agent_credential,
            Presented((), peer(_uri("agent", "nobody"))), "agent_a", "")


def test_an_agents_certificate_proves_the_agent(w):
    cert = peer(_uri("agent", "agent_a"))
    proven = w.auth.agent_credential(Presented((), cert), "agent_a", "")
    assert proven.principal == Principal(kind="agent", id="agent_a", cert_fingerprint=cert.fingerprint)


def test_an_agents_certificate_used_for_another_agent_is_wrong_agent(w):
    e = refused(NotAuthorised, "wrong_agent", w.auth.agent_credential,
                Presented((), peer(_uri("agent", "agent_a"))), "agent_b", "")
    assert e.principal.id == "agent_a"


def test_an_admins_certificate_cannot_act_as_an_agent(w):
    e = refused(NotAuthorised, "wrong_role", w.auth.agent_credential, Presented((), peer(_uri("admin", "root"))),
                "agent_a", "")
    assert e.principal.kind == "admin"


def test_the_key_and_certificate_of_the_same_agent_are_both_recorded(w):
    cert = peer(_uri("agent", "agent_a"))
    proven = w.auth.agent_credential(Presented((), cert), "agent_a", w.key("agent_a"))
    assert proven.principal.key_id == w.keys["agent_a"][1].key_id
    assert proven.principal.cert_fingerprint == cert.fingerprint


def test_a_key_with_a_certificate_naming_no_one_counts_the_key_only(w):
    proven = w.auth.agent_credential(Presented((), peer(_uri("agent", "nobody"))), "agent_a", w.key("agent_a"))
    assert proven.principal.key_id and proven.principal.cert_fingerprint is None


@pytest.mark.parametrize("cert_of,key_of", [(("agent", "agent_a"), "agent_b"), (("admin", "root"), "agent_a"),
                                            (("agent", "agent_a"), "root")])
def test_a_certificate_of_one_principal_and_a_key_of_another_conflict(w, cert_of, key_of):
    e = refused(NotAuthorised, "conflicting_credentials", w.auth.agent_credential,
                Presented((), peer(_uri(*cert_of))), "agent_a", w.key(key_of))
    assert e.key_id == w.keys[key_of][1].key_id


def test_a_revoked_agent_refuses_keys_made_before_and_accepts_keys_made_after(w):
    w.revocations.add(Revocation("agent", "agent_a", NOW - 60, "test"))
    e = refused(Unauthenticated, "revoked", w.auth.agent_credential, Presented((), None), "agent_a",
                w.key("agent_a"))
    assert e.key_id == w.keys["agent_a"][1].key_id
    fresh, h = generate_key(NOW - 30)  # made after the revocation
    agents = {**w.agents, "agent_a": AgentManifest(
        agent_id="agent_a", credentials=AgentCredentials(api_keys=[_entry(w.keys["agent_a"][1]), _entry(h)]))}
    w.holder.swap(replace(w.holder.current, agents=agents, directory=build_directory(agents, [], [], None)))
    assert w.auth.agent_credential(Presented((), None), "agent_a", fresh).principal.key_id == h.key_id
    # the old key stays refused
    refused(Unauthenticated, "revoked", w.auth.agent_credential, Presented((), None), "agent_a", w.key("agent_a"))


def test_a_revoked_agent_refuses_a_certificate_issued_before_and_accepts_one_issued_after(w):
    w.revocations.add(Revocation("agent", "agent_a", NOW - 60, "test"))
    refused(Unauthenticated, "revoked", w.auth.agent_credential,
            Presented((), peer(_uri("agent", "agent_a"), not_before=NOW - 3600)), "agent_a", "")
    assert w.auth.agent_credential(Presented((), peer(_uri("agent", "agent_a"), not_before=NOW - 1)),
                                   "agent_a", "").principal.id == "agent_a"


def test_the_directory_is_read_per_call_so_a_reload_withdraws_a_key(w):
    assert w.auth.agent_credential(Presented((), None), "agent_b", w.key("agent_b"))
    agents = {"agent_a": w.agents["agent_a"], "agent_b": AgentManifest(agent_id="agent_b")}
    w.holder.swap(replace(w.holder.current, agents=agents, directory=build_directory(agents, [], [], None)))
    refused(Unauthenticated, "unknown_key", w.auth.agent_credential, Presented((), None), "agent_b",
            w.key("agent_b"))


# -- role() (AdminService, approvals) ---------------------------------------------


def test_an_admin_key_proves_the_admin_role(w):
    proven = w.auth.role(with_bearer(w.key("root")), "admin")
    assert proven.principal == Principal(kind="admin", id="root", key_id=w.keys["root"][1].key_id)


def test_an_approver_key_proves_the_approver_role_and_not_admin(w):
    assert w.auth.role(with_bearer(w.key("alice")), "approver").principal.id == "alice"
    e = refused(NotAuthorised, "wrong_role", w.auth.role, with_bearer(w.key("alice")), "admin")
    assert e.principal.kind == "approver" and e.principal.id == "alice"
    assert e.key_id == w.keys["alice"][1].key_id


def test_an_admin_key_is_not_an_approver(w):
    refused(NotAuthorised, "wrong_role", w.auth.role, with_bearer(w.key("root")), "approver")


def test_an_agent_key_has_no_role(w):
    e = refused(NotAuthorised, "wrong_role", w.auth.role, with_bearer(w.key("agent_a")), "admin")
    assert e.principal.kind == "agent"


def test_an_agent_token_has_no_role_and_names_the_agent(w):
    issued = w.token()
    e = refused(NotAuthorised, "wrong_role", w.auth.role, with_bearer(issued.token), "admin")
    assert e.principal == Principal(kind="agent", id="agent_a", token_id=issued.claims.token_id)
    assert e.token_id == issued.claims.token_id


def test_a_forged_token_for_a_role_is_unauthenticated_not_permission_denied(w):
    forged = w.token(issuer=TokenIssuer(Ed25519PrivateKey.generate(), SERVICE))
    refused(Unauthenticated, "bad_signature", w.auth.role, with_bearer(forged.token), "admin")
    expired = w.token(at=NOW - 10_000)
    refused(Unauthenticated, "expired", w.auth.role, with_bearer(expired.token), "admin")


def test_role_unknown_key_and_no_credential(w):
    stranger, h = generate_key(NOW)
    e = refused(Unauthenticated, "unknown_key", w.auth.role, with_bearer(stranger), "admin")
    assert e.key_id == h.key_id
    refused(Unauthenticated, "missing_credential", w.auth.role, Presented((), None), "admin")
    refused(Unauthenticated, "missing_credential", w.auth.role, Presented((), peer(_uri("admin", "nobody"))), "admin")
    refused(Unauthenticated, "duplicate_authorization", w.auth.role,
            Presented((f"Bearer {w.key('root')}",) * 2, None), "admin")


def test_an_admin_certificate_proves_the_admin_role_by_uri_or_subject(w):
    cert = peer(_uri("admin", "root"))
    assert w.auth.role(Presented((), cert), "admin").principal == Principal(kind="admin", id="root",
                                                                             cert_fingerprint=cert.fingerprint)
    by_subject = peer(subject="CN=ops,O=Example")
    assert w.auth.role(Presented((), by_subject), "admin").principal.id == "ops"


@pytest.mark.parametrize("uri,kind", [(_uri("agent", "agent_a"), "agent"), (_uri("approver", "alice"), "approver")])
def test_another_roles_certificate_is_wrong_role(w, uri, kind):
    cert = peer(uri)
    e = refused(NotAuthorised, "wrong_role", w.auth.role, Presented((), cert), "admin")
    assert e.principal.kind == kind and e.principal.cert_fingerprint == cert.fingerprint


# -- may_approve ------------------------------------------------------------------


def test_an_approver_never_approves_an_agent_they_also_run(w):
    alice = w.auth.role(with_bearer(w.key("alice")), "approver").principal
    runs = w.directory.approver_agents["alice"]
    with pytest.raises(NotAuthorised) as e:
        may_approve(alice, runs, "agent_b")
    assert e.value.reason == "self_approval"
    may_approve(alice, runs, "agent_a")  # an agent they do not run


def test_only_an_approver_approves(w):
    root = w.auth.role(with_bearer(w.key("root")), "admin").principal
    with pytest.raises(NotAuthorised) as e:
        may_approve(root, frozenset(), "agent_a")
    assert e.value.reason == "wrong_role"
    with pytest.raises(NotAuthorised):
        may_approve(Principal(kind="agent", id="agent_b"), frozenset(), "agent_a")
