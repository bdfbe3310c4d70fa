"""Idempotency keys in-process, under the shipped policy: a repeat runs
nothing and returns the first result (even a block), another call under the
same key is refused, concurrent repeats run once, a repeat waits for a
first call still running, an escalated call keeps its key through its
approval, and a restart leaves no key claiming to run."""

from __future__ import annotations

import asyncio

import pytest

from enforcer.audit.records import DuplicateRecord, ExecutionRecord, Principal, RejectedRecord
from enforcer.errors import CallInFlight, IdempotencyConflict, InvalidRequest
from enforcer.pipeline.ledger import derived_key
from tests.pipeline.harness import AGENT, FakeSandbox, Harness
from tests.pipeline.test_approvals import TRANSFER, registry_without_connectors, reopen, until_final

GOAL = "Book invoice INV-2001: create the record"
RECORD = {"record_id": "INV-2001", "fields": {"vendor": "V-17", "amount": 125000}}


@pytest.fixture
def h(tmp_path):
    runs = {"n": 0}

    async def create(args):
        runs["n"] += 1
        return b'{"record_id": "INV-2001", "version": 1, "rollback_token": "INV-2001"}'
    harness = Harness(tmp_path, rego_engine=True, registry=registry_without_connectors(),
                      sandbox=FakeSandbox(behaviour=create))
    yield harness
    harness.close()


def run(coro):
    return asyncio.run(coro)


async def book(h: Harness, task: str, key: str = "book-1", args: dict | None = None, **kw):
    return await h.pipeline.execute(h.call(task, "create_record", dict(args or RECORD), idempotency_key=key, **kw))


def test_a_repeat_returns_the_first_result_and_runs_nothing(h):
    async def go():
        task = await h.start(goal=GOAL, actions=("create_record",))
        first = await book(h, task)
        again = await book(h, task)
        return first, again, await h.task(task)
    first, again, task = run(go())
    assert first.status == again.status == "succeeded" and not first.duplicate and again.duplicate
    assert again.output == first.output and again.rollback_token == first.rollback_token == "INV-2001"
    assert again.decision.decision_id == first.decision.decision_id
    assert len(h.sandbox.ran) == 1 and task.calls_so_far == 1  # the repeat counted nothing
    dup = h.records()[-1]
    assert isinstance(dup, DuplicateRecord) and dup.original_decision_id == first.decision.decision_id
    assert dup.original_event_id == first.event_id and dup.event_id == again.event_id


def test_the_same_key_with_other_arguments_is_refused(h):
    async def go():
        task = await h.start(goal=GOAL, actions=("create_record",))
        await book(h, task)
        with pytest.raises(IdempotencyConflict, match="another call"):
            await book(h, task, args={**RECORD, "fields": {"amount": 1}})
    run(go())
    assert len(h.sandbox.ran) == 1 and isinstance(h.records()[-1], RejectedRecord)
    assert h.records()[-1].error_code == "idempotency_conflict"


def test_keys_are_scoped_to_their_task(h):
    async def go():
        a = await h.start(goal=GOAL, actions=("create_record",))
        b = await h.start(goal=GOAL, actions=("create_record",))
        return await book(h, a), await book(h, b)
    first, second = run(go())
    assert not second.duplicate and len(h.sandbox.ran) == 2
    assert derived_key(AGENT, "tsk_a", "k") != derived_key(AGENT, "tsk_b", "k")


def test_concurrent_repeats_run_once(h):
    async def go():
        task = await h.start(goal=GOAL, actions=("create_record",))
        return await asyncio.gather(*(book(h, task) for _ in range(3)))
    results = run(go())
    assert len(h.sandbox.ran) == 1
    assert sorted(r.duplicate for r in results) == [False, True, True]
    assert len({r.decision.decision_id for r in results}) == 1 and all(r.status == "succeeded" for r in results)
    assert sum(isinstance(r, ExecutionRecord) for r in h.records()) == 1


def test_a_repeat_waits_for_a_first_call_still_running_or_gives_up_at_its_deadline(h):
    gate = asyncio.Event()

    async def slow(args):
        await gate.wait()
        return b'{"record_id": "INV-2001", "rollback_token": "INV-2001"}'

    async def go():
        h.sandbox.behaviour = slow
        task = await h.start(goal=GOAL, actions=("create_record",))
        first = asyncio.ensure_future(book(h, task))
        while not h.sandbox.running:
            await asyncio.sleep(0.01)
        import time
        with pytest.raises(CallInFlight):
            await book(h, task, deadline=time.monotonic())  # no time left to wait
        waiting = asyncio.ensure_future(book(h, task))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        gate.set()
        return await first, await waiting
    first, waited = run(go())
    assert waited.duplicate and waited.output == first.output and len(h.sandbox.ran) == 1


def test_a_blocked_first_call_is_replayed_as_blocked(h):
    async def go():
        task = await h.start(goal=GOAL, actions=("create_record",))
        first = await h.pipeline.execute(h.call(task, "delete_record", {"record_id": "INV-1"}, idempotency_key="d"))
        again = await h.pipeline.execute(h.call(task, "delete_record", {"record_id": "INV-1"}, idempotency_key="d"))
        return first, again
    first, again = run(go())
    assert first.status == again.status == "blocked" and again.duplicate and again.error == first.error


def test_an_escalated_call_keeps_its_key_through_its_approval(h):
    async def go():
        task = await h.start()
        first = await h.pipeline.execute(h.call(task, "transfer_funds", dict(TRANSFER), idempotency_key="pay-1",
                                                untrusted_input_source=True))
        waiting = await h.pipeline.execute(h.call(task, "transfer_funds", dict(TRANSFER), idempotency_key="pay-1"))
        await h.pipeline.approvals.resolve(first.approval_id, approve=True, comment="",
                                           approver=Principal(kind="approver", id="alice"))
        await until_final(h, first.approval_id)
        done = await h.pipeline.execute(h.call(task, "transfer_funds", dict(TRANSFER), idempotency_key="pay-1"))
        return first, waiting, done
    first, waiting, done = run(go())
    assert first.status == waiting.status == "pending_approval" and waiting.approval_id == first.approval_id
    assert done.duplicate and done.status == "succeeded" and len(h.sandbox.ran) == 1


def test_a_rejected_escalation_is_replayed_as_blocked(h):
    async def go():
        task = await h.start()
        first = await h.pipeline.execute(h.call(task, "transfer_funds", dict(TRANSFER), idempotency_key="pay-2"))
        await h.pipeline.approvals.resolve(first.approval_id, approve=False, comment="no",
                                           approver=Principal(kind="approver", id="alice"))
        return await h.pipeline.execute(h.call(task, "transfer_funds", dict(TRANSFER), idempotency_key="pay-2"))
    again = run(go())
    assert again.status == "blocked" and "rejected by alice" in again.error and not h.sandbox.ran


@pytest.mark.parametrize("key", ["", " ", "a b", "k" * 256, "é"])
def test_a_malformed_key_is_refused_and_saves_nothing(h, key):
    async def go():
        task = await h.start(goal=GOAL, actions=("create_record",))
        if key == "":
            return await book(h, task, key="")  # no key: an ordinary call
        with pytest.raises(InvalidRequest, match="idempotency_key"):
            await book(h, task, key=key)
    run(go())
    assert len(h.sandbox.ran) == (1 if key == "" else 0)


def test_a_restart_marks_a_call_that_was_running_unknown(h, tmp_path):
    async def before():
        task = await h.start(goal=GOAL, actions=("create_record",))
        async with h.db.transaction() as tx:  # the state a killed service leaves mid-call
            from enforcer.pipeline.payload import args_digest
            from enforcer.policy.decision import Decision
            from enforcer.state.store import CompensationRecord, IdempotencyRecord
            claimed = Decision("approve", "ok", 0.0, "risk", "sha256:r", "dec_1", rule="risk.within_threshold")
            await tx.put_idempotency(IdempotencyRecord(AGENT, task, "k", "create_record", args_digest(RECORD),
                                                       "dec_1", "running", {"decision": claimed.explanation()},
                                                       1.0, 10**10))
            await tx.register_compensation(CompensationRecord("dec_1", task, AGENT, 0, "create_record", RECORD,
                                                              "aecl-x", None, False, "running", None, 1.0))
            await tx.commit()
        return task
    task = run(before())
    h2 = reopen(h, tmp_path)

    async def after():
        await h2.pipeline.ledger.recover(revision="r")
        return await h2.db.get_idempotency(AGENT, task, "k"), await h2.db.get_compensation("dec_1")
    key, comp = run(after())
    assert key.status == "done" and key.result["status"] == "unknown" and comp.outcome == "unknown"

    entry = h2.records()[-1]
    assert isinstance(entry, ExecutionRecord) and entry.outcome == "unknown" and entry.decision_id == "dec_1"

    async def repeat():  # the agent retries after the restart: told, nothing run
        return await h2.pipeline.execute(h2.call(task, "create_record", dict(RECORD), idempotency_key="k"))
    again = run(repeat())
    assert (again.status, again.duplicate, again.decision.decision_id) == ("unknown", True, "dec_1")
    assert "outcome is unknown" in again.error and not h2.sandbox.ran
