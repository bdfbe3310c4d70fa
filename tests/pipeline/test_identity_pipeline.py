"""The pipeline's side of identity (issue 12): task tokens issued with a
task and renewed, revocation of a task or an agent ordered against the audit
log, and the auth_refused entry. In-process (tests/pipeline/harness.py):
real SQLite, the real audit log, real Ed25519 task tokens."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enforcer.audit.keys import load_public_key
from enforcer.audit.records import (
    AuthRefused,
    Principal,
    RejectedRecord,
    RevocationRecord,
    TaskStarted,
    TokenRenewed,
    timestamp,
)
from enforcer.audit.verify import verify_log
from enforcer.config import LimitsConfig, SandboxConfig
from enforcer.errors import (
    AuditUnavailable,
    NotAuthorised,
    NotFound,
    PermissionDenied,
    StoreError,
    TaskOver,
    Unauthenticated,
)
from enforcer.identity.authenticate import Authenticator, Presented
from enforcer.identity.revocations import Revocations
from enforcer.identity.tokens import TokenIssuer, TokenVerifier
from enforcer.manifests import AgentManifest
from enforcer.pipeline.pipeline import Pipeline
from enforcer.pipeline.request import RenewRequest, StartTaskRequest
from enforcer.state.store import Approval, Revocation
from tests.pipeline.harness import AGENT, Harness, answer

NOW = 1_796_166_000.0
SERVICE = "aecl"
OTHER = "reporting_agent"
ADMIN = Principal(kind="admin", id="root", key_id="0123456789ab")


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run(coro):
    return asyncio.run(coro)


def tokened(h: Harness, *, task_timeout_s: float = 1200.0, store=None) -> Pipeline:
    """Give the harness a pipeline that issues task tokens, on a fixed clock,
    with a second agent (short token TTL) beside the example's."""
    if not hasattr(h, "signing"):
        h.signing = Ed25519PrivateKey.generate()
        h.verifier = TokenVerifier(h.signing.public_key(), SERVICE)
        h.clock = Clock()
        agents = {**h.holder.current.agents,
                  OTHER: AgentManifest(agent_id=OTHER, token_ttl_seconds=60, credential_scope=["reports:read"])}
        h.holder.swap(replace(h.holder.current, agents=agents))
    h.pipeline = Pipeline(policy=h.holder, audit=h.audit, store=store or h.store, sandbox=h.sandbox,
                          sandbox_config=SandboxConfig(task_timeout_s=task_timeout_s), limits=LimitsConfig(),
                          metrics=h.metrics, clock=h.clock, tokens=TokenIssuer(h.signing, SERVICE),
                          service_id=SERVICE)
    return h.pipeline


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    tokened(harness)
    yield harness
    harness.close()


def authenticator(h: Harness) -> Authenticator:
    """The server's authenticator, sharing the pipeline's revocations."""
    return Authenticator(h.holder, h.verifier, h.pipeline.revocations, clock=h.clock)


def bearer(token: str) -> Presented:
    return Presented((f"Bearer {token}",), None)


async def start(h: Harness, agent: str = AGENT):
    return await h.pipeline.start_task(StartTaskRequest(agent, "Pay vendor invoices", (),
                                                        Principal(kind="agent", id=agent, key_id="aaaaaaaaaaaa")))


async def pending_approval(h: Harness, task_id: str) -> str:
    """A pending approval made the real way: an Execute the policy escalates."""
    h.engine.answer_for = lambda _i: answer("escalate")
    result = await h.pipeline.execute(h.call(task_id))
    assert result.status == "pending_approval", result
    h.engine.answer_for = lambda _i: answer()
    return result.approval_id


def revocation_rows(h: Harness) -> list[Revocation]:
    return run(h.db.list_revocations())


def verifies(h: Harness) -> None:
    h.audit.close()
    verify_log(h.audit_path, [load_public_key(h.pubkey)])


# -- StartTask issues a token ------------------------------------------------------


def test_start_task_returns_a_token_bound_to_the_agent_and_task(h):
    started = run(start(h))
    claims = h.verifier.verify(started.token, NOW)  # real signature check
    assert claims.agent_id == AGENT and claims.task_id == started.task_id
    assert claims.scope == tuple(h.holder.current.agents[AGENT].credential_scope)
    assert claims.issued_at == NOW and claims.expires_at == NOW + 900  # the manifest's token_ttl_seconds
    assert claims.expires_at <= started.expires_at and started.token_expires_at == claims.expires_at
    task = run(h.task(started.task_id))
    assert claims.expires_at <= task.expires_at
    record = h.records()[-1]
    assert isinstance(record, TaskStarted) and record.task_id == started.task_id
    assert record.token_id == claims.token_id and record.token_expires_at == timestamp(claims.expires_at)
    assert started.token.encode() not in h.audit_path.read_bytes()  # the id, never the token
    verifies(h)


def test_a_token_never_outlives_its_task(tmp_path):
    h = Harness(tmp_path)
    try:
        tokened(h, task_timeout_s=60.0)  # shorter than the 900 s token TTL
        started = run(start(h))
        claims = h.verifier.verify(started.token, NOW)
        assert claims.expires_at == started.expires_at == NOW + 60
    finally:
        h.close()


def test_each_task_gets_its_own_token(h):
    a, b = run(start(h)), run(start(h))
    ca, cb = h.verifier.verify(a.token, NOW), h.verifier.verify(b.token, NOW)
    assert ca.task_id != cb.task_id and ca.token_id != cb.token_id
    assert authenticator(h).task_token(bearer(a.token), AGENT, a.task_id).claims == ca
    with pytest.raises(NotAuthorised) as e:
        authenticator(h).task_token(bearer(a.token), AGENT, b.task_id)
    assert e.value.reason == "wrong_task"


def test_start_task_for_an_agent_without_a_manifest_is_refused_and_logged(h):
    """Every call that reaches the pipeline leaves an audit entry. With
    tokens on, the refusal (no manifest to issue a token from) is raised
    before anything is appended. FAILS today: see the report."""
    with pytest.raises(NotFound):
        run(start(h, "ghost_agent"))
    assert h.kinds() == ["rejected"]
    assert h.records()[0].error_code == "not_found" and h.records()[0].agent_id == "ghost_agent"
    count = h.db._read(lambda db: db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])
    assert count == 0


# -- RenewTaskToken -------------------------------------------------------------------


def test_renew_issues_a_fresh_token_for_a_live_task(h):
    started = run(start(h))
    h.clock.t = NOW + 600
    renewed = run(h.pipeline.renew_token(RenewRequest(AGENT, started.task_id)))
    old, new = h.verifier.verify(started.token, h.clock.t), h.verifier.verify(renewed.token, h.clock.t)
    assert new.task_id == started.task_id and new.agent_id == AGENT and new.token_id != old.token_id
    assert new.issued_at == NOW + 600 and new.expires_at == NOW + 1200 == started.expires_at  # clamped to the task
    record = h.records()[-1]
    assert isinstance(record, TokenRenewed) and record.token_id == new.token_id
    assert record.token_expires_at == timestamp(new.expires_at) and record.event_id == renewed.event_id


def test_renew_refuses_another_agents_task(h):
    started = run(start(h))
    with pytest.raises(PermissionDenied):
        run(h.pipeline.renew_token(RenewRequest(OTHER, started.task_id)))
    rejected = h.records()[-1]
    assert isinstance(rejected, RejectedRecord) and rejected.rpc == "RenewTaskToken"
    assert rejected.error_code == "permission_denied" and rejected.agent_id == OTHER
    with pytest.raises(NotFound):
        run(h.pipeline.renew_token(RenewRequest(AGENT, "tsk_missing")))
    assert h.records()[-1].error_code == "not_found"
    assert [r.KIND for r in h.records()].count("token_renewed") == 0


def test_renew_refuses_an_ended_task(h):
    started = run(start(h))
    h.clock.t = started.expires_at  # the task loop is over
    with pytest.raises(TaskOver):
        run(h.pipeline.renew_token(RenewRequest(AGENT, started.task_id)))
    assert h.records()[-1].error_code == "task_over"


def test_renew_refuses_a_revoked_task(h):
    started = run(start(h))
    run(h.pipeline.revoke("task", started.task_id, "leaked", ADMIN))
    h.clock.t = NOW - 1  # even on a clock that says the task would still be live
    with pytest.raises(Unauthenticated) as e:
        run(h.pipeline.renew_token(RenewRequest(AGENT, started.task_id)))
    assert e.value.reason == "revoked"
    assert h.records()[-1].KIND == "rejected" and h.records()[-1].error_code == "unauthenticated"


def test_renew_in_the_last_microsecond_of_a_task_is_task_over_not_a_crash(tmp_path):
    """A task with under a microsecond left cannot hold a token (claims are
    floored to microseconds): the answer must be TaskOver, logged. FAILS
    today with a bare ValueError and no audit entry: see the report."""
    h = Harness(tmp_path)
    try:
        tokened(h)
        h.clock.t = NOW + 0.0000005  # mid-microsecond
        started = run(start(h))
        # the last representable instant before the task's end, in the same microsecond
        h.clock.t = math.nextafter(started.expires_at, 0)
        assert math.floor(h.clock.t * 1e6) == math.floor(started.expires_at * 1e6)
        with pytest.raises(TaskOver):
            run(h.pipeline.renew_token(RenewRequest(AGENT, started.task_id)))
        assert h.records()[-1].KIND == "rejected"
    finally:
        h.close()


# -- revoke a task ------------------------------------------------------------------------


def test_revoking_a_task_ends_it_cancels_its_approval_and_logs_who(h):
    started = run(start(h))
    other = run(start(h))
    approval_id = run(pending_approval(h, started.task_id))
    other_approval = run(pending_approval(h, other.task_id))
    h.clock.t = NOW + 30
    revoked = run(h.pipeline.revoke("task", started.task_id, "token leaked in a log", ADMIN))
    assert revoked.tasks_revoked == (started.task_id,) and revoked.approvals_cancelled == 1
    assert run(h.task(started.task_id)).expires_at == NOW + 30
    assert run(h.task(other.task_id)).expires_at == other.expires_at
    assert run(h.db.get_approval(approval_id)).status == "cancelled"
    assert run(h.db.get_approval(other_approval)).status == "pending"
    record = h.records()[-1]
    assert isinstance(record, RevocationRecord) and record.event_id == revoked.event_id
    assert record.principal == ADMIN and record.rpc == "RevokeTask"
    assert (record.target, record.target_id, record.agent_id, record.task_id) == \
        ("task", started.task_id, AGENT, started.task_id)
    assert record.revoked_at == timestamp(NOW + 30) and record.reason == "token leaked in a log"
    assert record.tasks_revoked == (started.task_id,) and record.approvals_cancelled == 1
    assert revocation_rows(h) == [Revocation("task", started.task_id, NOW + 30, "token leaked in a log")]
    assert h.pipeline.revocations.task_revoked(started.task_id)
    assert not h.pipeline.revocations.task_revoked(other.task_id)
    verifies(h)


def test_a_revoked_tasks_token_is_refused_at_once(h):
    started = run(start(h))
    auth = authenticator(h)
    assert auth.task_token(bearer(started.token), AGENT, started.task_id)
    run(h.pipeline.revoke("task", started.task_id, "", ADMIN))
    with pytest.raises(Unauthenticated) as e:
        auth.task_token(bearer(started.token), AGENT, started.task_id)
    assert e.value.reason == "revoked"
    assert h.records()[-1].reason == "(no reason given)"


def test_an_execute_on_a_revoked_task_is_blocked_by_the_policy(tmp_path):
    h = Harness(tmp_path, rego_engine=True)
    try:
        tokened(h)
        started = run(start(h))
        h.clock.t = NOW + 1
        run(h.pipeline.revoke("task", started.task_id, "x", ADMIN))
        result = run(h.pipeline.execute(h.call(started.task_id)))
        assert result.status == "blocked" and "task expired" in result.error
        assert not h.sandbox.ran
    finally:
        h.close()


def test_revoking_an_unknown_task_is_not_found_and_rejected(h):
    with pytest.raises(NotFound):
        run(h.pipeline.revoke("task", "tsk_missing", "why", ADMIN))
    record = h.records()[-1]
    assert isinstance(record, RejectedRecord) and record.rpc == "RevokeTask" and record.error_code == "not_found"
    assert record.task_id == "tsk_missing" and record.principal == ADMIN
    assert record.input_payload == {"reason": "why"}
    assert "revocation" not in h.kinds() and revocation_rows(h) == []


def test_revoking_an_agent_without_manifest_or_task_is_not_found(h):
    with pytest.raises(NotFound):
        run(h.pipeline.revoke("agent", "ghost_agent", "", ADMIN))
    record = h.records()[-1]
    assert record.KIND == "rejected" and record.rpc == "RevokeAgent" and record.agent_id == "ghost_agent"
    assert revocation_rows(h) == [] and not h.pipeline.revocations.agent_refuses("ghost_agent", 0)


# -- revoke an agent --------------------------------------------------------------------------


def test_revoking_an_agent_ends_all_its_live_tasks_and_only_those(h):
    h.clock.t = NOW - 5000
    expired = run(start(h))  # its task loop ended long ago
    h.clock.t = NOW
    t1, t2 = run(start(h)), run(start(h))
    b = run(start(h, OTHER))
    approval_id = run(pending_approval(h, t2.task_id))
    h.clock.t = NOW + 10
    revoked = run(h.pipeline.revoke("agent", AGENT, "compromised", ADMIN))
    assert set(revoked.tasks_revoked) == {t1.task_id, t2.task_id} and revoked.approvals_cancelled == 1
    for t in (t1, t2):
        assert run(h.task(t.task_id)).expires_at == NOW + 10
    assert run(h.task(expired.task_id)).expires_at == expired.expires_at  # never lengthened, never touched
    assert run(h.task(b.task_id)).expires_at == b.expires_at
    assert run(h.db.get_approval(approval_id)).status == "cancelled"
    record = h.records()[-1]
    assert isinstance(record, RevocationRecord) and record.rpc == "RevokeAgent" and record.principal == ADMIN
    assert (record.target, record.target_id, record.agent_id, record.task_id) == ("agent", AGENT, AGENT, "")
    assert set(record.tasks_revoked) == set(revoked.tasks_revoked) and record.approvals_cancelled == 1
    assert revocation_rows(h) == [Revocation("agent", AGENT, NOW + 10, "compromised")]
    assert h.pipeline.revocations.agent_refuses(AGENT, NOW + 10)
    assert not h.pipeline.revocations.agent_refuses(OTHER, NOW)


def test_revoking_an_agent_cancels_an_approval_waiting_in_an_ended_task(h):
    """An approval can outlive its task (the task loop ended, the approval's
    TTL has not): revoking the agent cancels it all the same."""
    t = run(start(h))
    approval_id = run(pending_approval(h, t.task_id))
    h.clock.t = t.expires_at + 1  # the task is over; its approval still pending
    revoked = run(h.pipeline.revoke("agent", AGENT, "compromised", ADMIN))
    assert revoked.tasks_revoked == () and revoked.approvals_cancelled == 1
    assert run(h.db.get_approval(approval_id)).status == "cancelled"


def test_a_revoked_agents_old_tokens_are_refused_and_a_later_token_works(h):
    old = run(start(h))
    h.clock.t = NOW + 10
    run(h.pipeline.revoke("agent", AGENT, "compromised", ADMIN))
    auth = authenticator(h)
    with pytest.raises(Unauthenticated) as e:
        auth.task_token(bearer(old.token), AGENT, old.task_id)
    assert e.value.reason == "revoked"
    h.clock.t = NOW + 11  # a new task with a credential made after the revocation
    fresh = run(start(h))
    assert auth.task_token(bearer(fresh.token), AGENT, fresh.task_id).principal.id == AGENT


def test_revoking_an_agent_with_a_manifest_but_no_task_is_recorded(h):
    revoked = run(h.pipeline.revoke("agent", OTHER, "offboarded", ADMIN))
    assert revoked.tasks_revoked == () and revoked.approvals_cancelled == 0
    assert revocation_rows(h) == [Revocation("agent", OTHER, NOW, "offboarded")]
    assert h.records()[-1].KIND == "revocation"


def test_a_second_revocation_of_an_agent_moves_its_time_forward(h):
    run(h.pipeline.revoke("agent", AGENT, "first", ADMIN))
    h.clock.t = NOW + 100
    run(h.pipeline.revoke("agent", AGENT, "second", ADMIN))
    assert [r.revoked_at for r in revocation_rows(h)] == [NOW + 100]
    assert h.pipeline.revocations.agent_refuses(AGENT, NOW + 50)


# -- ordering against the audit log ---------------------------------------------------------


@pytest.mark.parametrize("target", ["task", "agent"])
def test_a_revocation_whose_entry_cannot_be_appended_changes_nothing(h, target):
    started = run(start(h))
    approval_id = run(pending_approval(h, started.task_id))
    kinds_before = h.kinds()
    h.clock.t = NOW + 30
    h.break_audit()
    with pytest.raises(AuditUnavailable):
        run(h.pipeline.revoke(target, started.task_id if target == "task" else AGENT, "x", ADMIN))
    assert run(h.task(started.task_id)).expires_at == started.expires_at  # not ended
    assert revocation_rows(h) == []
    assert run(h.db.get_approval(approval_id)).status == "pending"
    assert not h.pipeline.revocations.task_revoked(started.task_id)
    assert not h.pipeline.revocations.agent_refuses(AGENT, NOW)
    assert h.kinds() == kinds_before  # nothing was logged either
    # and the token still works: nothing was revoked
    assert authenticator(h).task_token(bearer(started.token), AGENT, started.task_id)


@pytest.mark.parametrize("op", ["revoke", "end_tasks", "cancel_pending_approvals", "live_tasks_of"])
def test_a_store_failure_before_the_append_logs_a_rejection_and_no_revocation(h, op):
    started = run(start(h))
    h.store.fail.add(op)
    target = "agent" if op == "live_tasks_of" else "task"
    with pytest.raises(StoreError):
        run(h.pipeline.revoke(target, started.task_id if target == "task" else AGENT, "x", ADMIN))
    assert "revocation" not in h.kinds()
    assert h.records()[-1].KIND == "rejected" and h.records()[-1].error_code == "store_unavailable"
    assert run(h.task(started.task_id)).expires_at == started.expires_at and revocation_rows(h) == []
    assert not h.pipeline.revocations.task_revoked(started.task_id)


def test_a_failed_commit_after_the_append_is_logged_and_refuses_nothing_in_memory(h):
    """The log may explain what the store lacks, never the reverse: the
    revocation entry is followed by the rejection, and since the store did
    not change, the in-memory mirror must not either."""
    started = run(start(h))
    h.store.fail.add("commit")
    with pytest.raises(StoreError):
        run(h.pipeline.revoke("task", started.task_id, "x", ADMIN))
    assert h.kinds()[-2:] == ["revocation", "rejected"]
    assert run(h.task(started.task_id)).expires_at == started.expires_at and revocation_rows(h) == []
    assert not h.pipeline.revocations.task_revoked(started.task_id)


# -- start-up ---------------------------------------------------------------------------------


def test_load_revocations_restores_what_the_store_committed(h, tmp_path):
    started = run(start(h))
    h.clock.t = NOW + 5
    run(h.pipeline.revoke("task", started.task_id, "x", ADMIN))
    h.clock.t = NOW + 6
    run(h.pipeline.revoke("agent", OTHER, "y", ADMIN))
    restarted = tokened(h, store=h.db)  # a fresh pipeline on the same database (FaultyStore has no list_revocations)
    assert not restarted.revocations.task_revoked(started.task_id)
    run(restarted.load_revocations())
    assert restarted.revocations.task_revoked(started.task_id)
    assert restarted.revocations.agent_refuses(OTHER, NOW + 6) and not restarted.revocations.agent_refuses(OTHER, NOW + 7)
    assert not restarted.revocations.agent_refuses(AGENT, NOW)
    with pytest.raises(Unauthenticated):
        run(restarted.renew_token(RenewRequest(AGENT, started.task_id)))


# -- auth_refused ------------------------------------------------------------------------------


def test_log_auth_refused_records_the_refusal_without_the_secret(h):
    started = run(start(h))
    auth = authenticator(h)
    with pytest.raises(NotAuthorised) as denied:
        auth.task_token(bearer(started.token), OTHER, started.task_id)
    e = denied.value
    run(h.pipeline.log_auth_refused("Execute", e, agent_id=OTHER, task_id=started.task_id, principal=e.principal,
                                    peer="ipv4:127.0.0.1:5000", key_id=e.key_id, token_id=e.token_id))
    record = h.records()[-1]
    assert isinstance(record, AuthRefused) and record.refusal == "wrong_agent"
    assert record.status == "PERMISSION_DENIED" and record.principal.id == AGENT
    assert record.token_id == h.verifier.verify(started.token, NOW).token_id and record.agent_id == OTHER
    with pytest.raises(Unauthenticated) as unauth:
        auth.task_token(bearer(started.token + "x"), AGENT, started.task_id)
    run(h.pipeline.log_auth_refused("Execute", unauth.value, agent_id=AGENT, task_id="", principal=None,
                                    peer="x" * 1000, key_id=None, token_id=None))
    record = h.records()[-1]
    assert record.status == "UNAUTHENTICATED" and record.principal is None and len(record.peer) == 256
    assert started.token.encode() not in h.audit_path.read_bytes()
    verifies(h)


def test_a_refusal_that_cannot_be_logged_raises(h):
    h.break_audit()
    with pytest.raises(AuditUnavailable):
        run(h.pipeline.log_auth_refused("Execute", Unauthenticated("missing_token", "none"), agent_id=AGENT,
                                        task_id="", principal=None, peer="", key_id=None, token_id=None))


def test_revocations_start_empty_and_are_a_revocations_mirror(h):
    assert isinstance(h.pipeline.revocations, Revocations)
    assert not h.pipeline.revocations.agent_refuses(AGENT, 0)


def test_a_directly_made_pending_approval_is_cancelled_too(h):
    """An approval created through a store transaction, not an Execute."""
    started = run(start(h))

    async def make():
        async with h.db.transaction() as tx:
            await tx.create_approval(Approval("apr_direct", started.task_id, "dec_x", "transfer_funds", NOW,
                                              NOW + 600, "pending"))
            await tx.create_approval(Approval("apr_done", started.task_id, "dec_y", "transfer_funds", NOW,
                                              NOW + 600, "approved"))
            await tx.commit()
    run(make())
    revoked = run(h.pipeline.revoke("task", started.task_id, "x", ADMIN))
    assert revoked.approvals_cancelled == 1
    assert run(h.db.get_approval("apr_direct")).status == "cancelled"
    assert run(h.db.get_approval("apr_done")).status == "approved"
