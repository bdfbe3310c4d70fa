"""Authenticating one call: from what the connection and the request present
to a proven Principal, or a refusal.

Pure decisions over the directory (who holds which key or certificate), the
token verifier and the revocations; the gRPC interceptor
(enforcer.server.auth) gathers what was presented and logs refusals. Two
kinds of refusal, never confused:
- Unauthenticated (UNAUTHENTICATED): no valid proof of identity (missing,
  malformed, expired, not yet valid, forged, wrong audience, revoked);
- NotAuthorised (PERMISSION_DENIED): a proven identity that may not make
  this call (another agent's or task's id, the wrong role).
The principal always comes from the proof, never from the request body.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from enforcer.audit.records import Principal
from enforcer.errors import NotAuthorised, Unauthenticated
from enforcer.identity.apikeys import parse_key
from enforcer.identity.certs import PeerCertificate
from enforcer.identity.revocations import Revocations
from enforcer.identity.tokens import TaskClaims, TokenVerifier
from enforcer.policy.holder import PolicyHolder

TOKEN_PREFIX = "v4.public."
Role = Literal["approver", "admin"]


@dataclass(frozen=True)
class Presented:
    """What a call brings to prove who it is (never logged as such)."""

    authorization: tuple[str, ...]  # every `authorization` metadata value
    peer: PeerCertificate | None  # the verified client certificate (mTLS)


def tagged(error: Unauthenticated | NotAuthorised, *, principal: Principal | None = None,
           key_id: str | None = None, token_id: str | None = None) -> Unauthenticated | NotAuthorised:
    """What the `auth_refused` entry may say of a refused call besides the
    reason: the identity that was proven (PERMISSION_DENIED), the key id or
    token id involved. Never the secret."""
    error.principal = principal  # type: ignore[union-attr]
    error.key_id = key_id  # type: ignore[union-attr]
    error.token_id = token_id  # type: ignore[union-attr]
    return error


@dataclass(frozen=True)
class Proven:
    principal: Principal
    claims: TaskClaims | None = None


def bearer(presented: Presented) -> str | None:
    """The one bearer credential of the call, or None when there is none."""
    values = presented.authorization
    if len(values) > 1:
        raise Unauthenticated("duplicate_authorization",
                              f"{len(values)} `authorization` headers: send exactly one")
    if not values:
        return None
    scheme, _, credential = values[0].partition(" ")
    if scheme.lower() != "bearer" or not credential or " " in credential.strip():
        raise Unauthenticated("malformed_authorization", "`authorization` must be `Bearer <token or key>`")
    return credential.strip()


class Authenticator:
    def __init__(self, policy: PolicyHolder, verifier: TokenVerifier, revocations: Revocations,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.verifier = verifier
        self.revocations = revocations
        self.clock = clock

    # -- agents ----------------------------------------------------------------

    def task_token(self, presented: Presented, agent_id: str, task_id: str | None) -> Proven:
        """An agent RPC after StartTask: a valid task token whose agent (and
        task, when the RPC names one) are the request's."""
        proven = self.token_holder(presented)
        claims, principal, tid = proven.claims, proven.principal, proven.principal.token_id
        assert claims is not None
        if agent_id != claims.agent_id:
            raise tagged(NotAuthorised("wrong_agent", f"agent_id: the token is agent {claims.agent_id}'s, "
                                                      f"not for agent {agent_id[:128]!r}"), principal=principal, token_id=tid)
        if task_id is not None and task_id != claims.task_id:
            raise tagged(NotAuthorised("wrong_task", f"task_id: the token is for task {claims.task_id}, "
                                                     f"not {task_id[:128]!r}"), principal=principal, token_id=tid)
        return proven

    def token_holder(self, presented: Presented) -> Proven:
        """Whoever holds a valid, unrevoked task token of a known agent
        (checked before the request's ids are bound to it)."""
        token = bearer(presented)
        if token is None:
            raise Unauthenticated("missing_token", "no `authorization: Bearer <task token>`: call StartTask "
                                                   "with the agent's credential for one")
        claims = self.verifier.verify(token, self.clock())
        tid = claims.token_id
        if self.revocations.task_revoked(claims.task_id) or self.revocations.agent_refuses(
                claims.agent_id, claims.issued_at):
            raise tagged(Unauthenticated("revoked", f"the token's task {claims.task_id} or agent "
                                                    f"{claims.agent_id} was revoked"), token_id=tid)
        if claims.agent_id not in self.policy.current.agents:
            raise tagged(Unauthenticated("unknown_agent", f"agent {claims.agent_id} has no manifest any more"),
                         token_id=tid)
        return Proven(Principal(kind="agent", id=claims.agent_id, token_id=tid), claims)

    def agent_credential(self, presented: Presented, agent_id: str, credential: str) -> Proven:
        """StartTask and RenewTaskToken: the agent's API key, or its client
        certificate on an mTLS connection."""
        directory = self.policy.current.directory
        peer = presented.peer
        by_cert = directory.by_certificate(peer.uri_sans, peer.subject) if peer is not None else None
        if credential:
            try:
                cred = directory.check_key(credential)
            except Unauthenticated as e:
                raise tagged(e, key_id=_key_id_of(credential)) from None
            if by_cert is not None and by_cert != (cred.kind, cred.principal_id):
                raise tagged(NotAuthorised("conflicting_credentials", "the API key and the client certificate "
                                                                      "belong to different principals"),
                             key_id=cred.key.key_id)
            kind, pid, issued = cred.kind, cred.principal_id, cred.key.created_ts
            principal = Principal(kind=kind, id=pid, key_id=cred.key.key_id,
                                  cert_fingerprint=peer.fingerprint if by_cert else None)
        elif by_cert is not None:
            assert peer is not None
            kind, pid, issued = by_cert[0], by_cert[1], peer.not_before
            principal = Principal(kind=kind, id=pid, cert_fingerprint=peer.fingerprint)
        elif peer is not None:
            raise Unauthenticated("unknown_certificate", "the client certificate names no principal "
                                                         "(no manifest has its URI SAN or subject)")
        else:
            raise Unauthenticated("missing_credential", "credential: the agent's API key is required "
                                                        "(or connect with the agent's client certificate)")
        if kind != "agent":
            raise tagged(NotAuthorised("wrong_role", f"a {kind} credential cannot act as an agent"),
                         principal=principal, key_id=principal.key_id)
        if self.revocations.agent_refuses(pid, issued):
            raise tagged(Unauthenticated("revoked", f"agent {pid} was revoked after this credential was issued"),
                         key_id=principal.key_id)
        if pid != agent_id:
            raise tagged(NotAuthorised("wrong_agent", f"agent_id: the credential is agent {pid}'s, "
                                                      f"not for agent {agent_id[:128]!r}"),
                         principal=principal, key_id=principal.key_id)
        return Proven(principal)

    # -- people ------------------------------------------------------------------

    def role(self, presented: Presented, role: Role) -> Proven:
        """AdminService (admin) and, next, the approval RPCs (approver): that
        role's API key as a bearer, or its client certificate. An agent's
        token or key never counts."""
        directory = self.policy.current.directory
        value = bearer(presented)
        if value is not None:
            if value.startswith(TOKEN_PREFIX):
                claims = self.verifier.verify(value, self.clock())  # a forged one is UNAUTHENTICATED
                raise tagged(NotAuthorised("wrong_role", f"a task token (agent {claims.agent_id}) cannot call "
                                                         f"{role} RPCs"),
                             principal=Principal(kind="agent", id=claims.agent_id, token_id=claims.token_id),
                             token_id=claims.token_id)
            try:
                cred = directory.check_key(value)
            except Unauthenticated as e:
                raise tagged(e, key_id=_key_id_of(value)) from None
            if cred.kind != role:
                raise tagged(NotAuthorised("wrong_role", f"a {cred.kind} key cannot call {role} RPCs"),
                             principal=Principal(kind=cred.kind, id=cred.principal_id, key_id=cred.key.key_id),
                             key_id=cred.key.key_id)
            return Proven(Principal(kind=role, id=cred.principal_id, key_id=cred.key.key_id))
        peer = presented.peer
        hit = directory.by_certificate(peer.uri_sans, peer.subject) if peer is not None else None
        if hit is None:
            raise Unauthenticated("missing_credential", f"no {role} credential: send "
                                                        f"`authorization: Bearer <{role} API key>`")
        assert peer is not None
        if hit[0] != role:
            raise tagged(NotAuthorised("wrong_role", f"a {hit[0]} certificate cannot call {role} RPCs"),
                         principal=Principal(kind=hit[0], id=hit[1], cert_fingerprint=peer.fingerprint))
        return Proven(Principal(kind=role, id=hit[1], cert_fingerprint=peer.fingerprint))


def _key_id_of(text: str) -> str | None:
    """The key id of a presented key, if it is shaped like one (not secret)."""
    try:
        return parse_key(text)
    except Unauthenticated:
        return None


def may_approve(approver: Principal, agents_of_approver: frozenset[str], task_agent_id: str) -> None:
    """Self-approval is refused. Keys and certificates have one owner each,
    so a person who also runs agents holds separate agent credentials; the
    config links them (approvers[].agent_ids), and such an approver never
    approves a call of those agents' tasks."""
    if approver.kind != "approver":
        raise NotAuthorised("wrong_role", f"a {approver.kind} cannot approve")
    if task_agent_id in agents_of_approver:
        raise NotAuthorised("self_approval", f"approver {approver.id} also runs agent {task_agent_id} "
                                             "and may not approve its calls")
