"""The pipeline in-process: every outcome, and every failure point on the
way (audit append before and after the sandbox, the store, the sandbox,
cancellation), with the invariant that nothing exists the log does not
explain and every approved call ends in exactly one execution entry."""

from __future__ import annotations

import asyncio

import pytest

from enforcer.audit.records import DecisionRecord, ExecutionRecord, RejectedRecord
from enforcer.audit.verify import verify_log
from enforcer.audit.keys import load_public_key
from enforcer.errors import (AeclError, AuditUnavailable, NotFound, PermissionDenied, SandboxBusy,
                             SandboxError, StoreError)
from tests.pipeline.harness import AGENT, FakeEngine, FakeSandbox, Harness, answer


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def run(coro):
    return asyncio.run(coro)


def verifies(h: Harness) -> None:
    h.audit.close()
    verify_log(h.audit_path, [load_public_key(h.pubkey)])


# -- outcomes ------------------------------------------------------------------


def test_approve_runs_once_and_logs_decision_then_execution(h):
    async def go():
        task = await h.start()
        result = await h.pipeline.execute(h.call(task))
        assert result.status == "succeeded" and result.output == {"ok": True}
        assert result.appended is not None and result.appended.seq == 2
        assert (await h.task(task)).calls_so_far == 1
    run(go())
    assert h.kinds() == ["task_started", "decision", "execution"]
    assert len(h.sandbox.ran) == 1
    decision, execution = h.records()[1:]
    assert execution.decision_id == decision.decision_id and execution.outcome == "succeeded"
    assert decision.schema == 2 and decision.policy_input["task"]["calls_so_far"] == 0
    verifies(h)


def test_block_runs_nothing_and_counts_the_call(h):
    h.engine.answer_for = lambda _i: answer("block")

    async def go():
        task = await h.start()
        result = await h.pipeline.execute(h.call(task))
        assert result.status == "blocked" and result.error == "test says block"
        assert (await h.task(task)).calls_so_far == 1  # explained by the block decision
    run(go())
    assert h.kinds() == ["task_started", "decision"] and not h.sandbox.ran


def test_escalate_creates_one_pending_approval_named_in_the_log(h):
    h.engine.answer_for = lambda _i: answer("escalate")

    async def go():
        task = await h.start()
        result = await h.pipeline.execute(h.call(task))
        assert result.status == "pending_approval"
        approval = await h.db.get_approval(result.approval_id)
        assert approval is not None and approval.status == "pending"
        assert approval.expires_at - approval.created_at == 600
        return result
    result = run(go())
    assert h.records()[-1].hitl_approval_id == result.approval_id and not h.sandbox.ran


def test_decide_is_a_dry_run(h):
    async def go():
        task = await h.start()
        result = await h.pipeline.decide(h.call(task, rpc="Decide"))
        assert result.decision.outcome == "approve"
        assert (await h.task(task)).calls_so_far == 0
    run(go())
    assert h.kinds() == ["task_started", "decision"] and not h.sandbox.ran


def test_engine_failure_blocks_even_in_shadow_mode(h):
    from dataclasses import replace

    from enforcer.errors import EngineUnavailable

    def down(_i):
        raise EngineUnavailable("sidecar down")
    h.engine.answer_for = down
    h.holder.swap(replace(h.holder.current, shadow_all=True))

    async def go():
        task = await h.start()
        result = await h.pipeline.execute(h.call(task))
        assert result.status == "blocked" and "sidecar down" in result.error
    run(go())
    decision = h.records()[-1]
    assert isinstance(decision, DecisionRecord) and decision.gate == "engine" and not decision.shadow
    assert not h.sandbox.ran


def test_shadow_block_runs_with_enforced_false(h):
    from dataclasses import replace
    h.engine.answer_for = lambda _i: answer("block")
    h.holder.swap(replace(h.holder.current, shadow_all=True))

    async def go():
        task = await h.start()
        assert (await h.pipeline.execute(h.call(task))).status == "succeeded"
    run(go())
    decision, execution = h.records()[1:]
    assert decision.shadow and decision.enforced is False and execution.outcome == "succeeded"


# -- admission ---------------------------------------------------------------------


def test_foreign_agent_is_refused_and_consumes_nothing(tmp_path):
    """The issue's acceptance: 100 Executes by agent B on agent A's task are
    refused with PERMISSION_DENIED, each logged, and A's task still makes its
    full budget of calls afterwards (the real policy decides the budget)."""
    h = Harness(tmp_path, rego_engine=True)
    try:
        async def go():
            task = await h.start(goal="read invoices")
            for _ in range(100):
                with pytest.raises(PermissionDenied):
                    await h.pipeline.execute(h.call(task, agent="reporting_agent"))
            assert (await h.task(task)).calls_so_far == 0
            budget = h.holder.current.call_budget(AGENT)
            assert budget == 50
            for _ in range(budget):
                assert (await h.pipeline.execute(h.call(task))).status == "succeeded"
            over = await h.pipeline.execute(h.call(task))
            assert over.status == "blocked" and "call budget exhausted" in over.error
            assert (await h.task(task)).calls_so_far == budget  # the refused one counted nothing
        run(go())
        records = h.records()
        refused = [r for r in records if isinstance(r, RejectedRecord)]
        assert len(refused) == 100
        assert {r.error_code for r in refused} == {"permission_denied"}
        assert all(r.agent_id == "reporting_agent" for r in refused)
        assert len(h.sandbox.ran) == 50
    finally:
        h.close()


def test_unknown_task_is_not_found_and_logged(h):
    async def go():
        with pytest.raises(NotFound):
            await h.pipeline.execute(h.call("tsk_missing"))
    run(go())
    assert h.kinds() == ["rejected"] and h.records()[0].error_code == "not_found"


def test_expired_task_counts_nothing_and_the_policy_blocks(tmp_path):
    h = Harness(tmp_path, rego_engine=True)
    try:
        async def go():
            task = await h.start(goal="read invoices")
            h.pipeline.clock = lambda: 4_000_000_000.0  # long past the task loop
            result = await h.pipeline.execute(h.call(task))
            assert result.status == "blocked" and "task expired" in result.error
            assert (await h.task(task)).calls_so_far == 0
        run(go())
    finally:
        h.close()


# -- the audit log failing -------------------------------------------------------


def test_audit_failing_during_escalation_leaves_no_pending_approval(h):
    """The issue's acceptance: no state the log does not explain."""
    h.engine.answer_for = lambda _i: answer("escalate")

    async def go():
        task = await h.start()
        h.break_audit()
        with pytest.raises(AuditUnavailable):
            await h.pipeline.execute(h.call(task))
        assert await h.approvals() == 0
        assert (await h.task(task)).calls_so_far == 0  # the claim rolled back too
    run(go())


def test_audit_failing_during_start_task_leaves_no_task(h):
    async def go():
        h.break_audit()
        with pytest.raises(AuditUnavailable):
            await h.start()
        count = h.db._read(lambda db: db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])
        assert count == 0
    run(go())


def test_audit_failing_on_a_block_rolls_back_the_claim(h):
    h.engine.answer_for = lambda _i: answer("block")

    async def go():
        task = await h.start()
        h.break_audit()
        with pytest.raises(AuditUnavailable):
            await h.pipeline.execute(h.call(task))
        assert (await h.task(task)).calls_so_far == 0
    run(go())


def test_audit_failing_before_the_sandbox_releases_nothing(h):
    async def go():
        task = await h.start()
        h.break_audit()
        with pytest.raises(AuditUnavailable):
            await h.pipeline.execute(h.call(task))
        assert (await h.task(task)).calls_so_far == 0
    run(go())
    assert h.sandbox.released == 0 and not h.sandbox.ran


def test_audit_failing_after_the_sandbox_is_refused_loudly(h, caplog):
    async def behaviour(_args):
        h.break_audit()  # the tool ran; its execution entry cannot be written
        return b'{"ok": true}'
    h.sandbox.behaviour = behaviour

    async def go():
        task = await h.start()
        with pytest.raises(AuditUnavailable):
            await h.pipeline.execute(h.call(task))
    run(go())
    assert len(h.sandbox.ran) == 1
    assert any("could not be logged" in r.message and r.levelname == "CRITICAL" for r in caplog.records)
    assert h.kinds() == ["task_started", "decision"]


def test_a_poisoned_log_refuses_every_later_call(h):
    async def go():
        task = await h.start()
        h.break_audit()
        for _ in range(3):
            with pytest.raises(AuditUnavailable):
                await h.pipeline.decide(h.call(task, rpc="Decide"))
    run(go())
    assert h.audit.failure is not None


# -- the store failing ----------------------------------------------------------------


def test_store_failing_at_claim_is_logged_and_runs_nothing(h):
    async def go():
        task = await h.start()
        h.store.fail.add("claim_call")
        with pytest.raises(StoreError):
            await h.pipeline.execute(h.call(task))
    run(go())
    assert h.kinds()[-1] == "rejected" and h.records()[-1].error_code == "store_unavailable"
    assert not h.sandbox.ran


def test_store_failing_at_commit_of_an_approved_call_runs_nothing_and_logs_it(h):
    async def go():
        task = await h.start()
        h.store.fail.add("commit")
        with pytest.raises(StoreError):
            await h.pipeline.execute(h.call(task))
        assert (await h.task(task)).calls_so_far == 0
    run(go())
    assert h.sandbox.released == 0 and not h.sandbox.ran
    decision, execution = h.records()[-2:]
    assert isinstance(execution, ExecutionRecord) and execution.cause == "store_failed"
    assert execution.decision_id == decision.decision_id and execution.outcome == "failed"


def test_store_failing_at_commit_of_an_escalation_is_logged(h):
    h.engine.answer_for = lambda _i: answer("escalate")

    async def go():
        task = await h.start()
        h.store.fail.add("commit")
        with pytest.raises(StoreError):
            await h.pipeline.execute(h.call(task))
        assert await h.approvals() == 0
    run(go())
    decision, rejected = h.records()[-2:]
    assert decision.outcome == "escalate"
    assert isinstance(rejected, RejectedRecord) and rejected.decision_id == decision.decision_id


def test_store_failing_at_create_approval_leaves_nothing(h):
    h.engine.answer_for = lambda _i: answer("escalate")

    async def go():
        task = await h.start()
        h.store.fail.add("create_approval")
        with pytest.raises(StoreError):
            await h.pipeline.execute(h.call(task))
        assert await h.approvals() == 0 and (await h.task(task)).calls_so_far == 0
    run(go())


def test_store_failing_for_a_decide_is_logged(h):
    async def go():
        task = await h.start()
        h.store.fail.add("get_task")
        with pytest.raises(StoreError):
            await h.pipeline.decide(h.call(task, rpc="Decide"))
    run(go())
    assert h.records()[-1].error_code == "store_unavailable"


# -- the sandbox failing ---------------------------------------------------------


def test_sandbox_that_cannot_start_is_a_failed_execution(h):
    h.sandbox.fail_start = SandboxError("no bwrap")

    async def go():
        task = await h.start()
        result = await h.pipeline.execute(h.call(task))
        assert result.status == "failed" and "could not start" in result.error
    run(go())
    execution = h.records()[-1]
    assert execution.KIND == "execution" and execution.cause == "sandbox_unavailable"


def test_sandbox_busy_is_logged_then_refused(h):
    h.sandbox.fail_start = SandboxBusy("sandbox.max_concurrent=1 reached")

    async def go():
        task = await h.start()
        with pytest.raises(SandboxBusy):
            await h.pipeline.execute(h.call(task))
    run(go())
    decision, execution = h.records()[-2:]
    assert decision.outcome == "approve" and execution.cause == "sandbox_busy"


def test_a_crash_inside_the_runner_is_still_an_execution_entry(h):
    async def behaviour(_args):
        raise RuntimeError("bug")
    h.sandbox.behaviour = behaviour

    async def go():
        task = await h.start()
        with pytest.raises(AeclError, match="internal error"):
            await h.pipeline.execute(h.call(task))
    run(go())
    assert h.records()[-1].cause == "internal_error"


def test_deeply_nested_output_is_a_clear_failure(h):
    """A tool printing 100,000-deep JSON ends in a FAILED execution entry."""
    async def behaviour(_args):
        return b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    h.sandbox.behaviour = behaviour

    async def go():
        task = await h.start()
        result = await h.pipeline.execute(h.call(task))
        assert result.status == "failed" and "nested deeper than 32 levels" in result.error
    run(go())
    assert h.records()[-1].outcome == "failed"
    verifies(h)


def test_output_nested_past_the_bound_is_refused_and_within_it_passes(h):
    deep = b'{"a":' * 40 + b"1" + b"}" * 40
    ok = b'{"a":' * 31 + b"1" + b"}" * 31
    outputs = iter([deep, ok])

    async def behaviour(_args):
        return next(outputs)
    h.sandbox.behaviour = behaviour

    async def go():
        task = await h.start()
        assert (await h.pipeline.execute(h.call(task))).status == "failed"
        assert (await h.pipeline.execute(h.call(task))).status == "succeeded"
    run(go())


# -- cancellation -----------------------------------------------------------------


def test_cancellation_while_the_tool_runs_is_logged_with_its_cause(h):
    started = asyncio.Event

    async def go():
        gate = started()

        async def behaviour(_args):
            gate.set()
            await asyncio.sleep(3600)
        h.sandbox.behaviour = behaviour
        task = await h.start()
        call = asyncio.ensure_future(h.pipeline.execute(h.call(task)))
        await gate.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    run(go())
    execution = h.records()[-1]
    assert isinstance(execution, ExecutionRecord)
    assert execution.cause == "client_cancelled" and execution.outcome == "failed"
    assert execution.duration_ms > 0
    assert execution.sandbox_id == h.sandbox.last_id and execution.sandbox_id.startswith("sbx_")


def test_cancellation_during_the_decisions_append_still_ends_in_an_execution(h):
    """Cancelled while the approved decision is being fsynced: the decision
    becomes durable all the same (and its claim is committed), so an
    execution entry must follow it; the tool never ran."""
    h.sandbox.cancel_before_release = True

    async def go():
        task = await h.start()
        with pytest.raises(asyncio.CancelledError):
            await h.pipeline.execute(h.call(task))
        assert (await h.task(task)).calls_so_far == 1  # explained by the decision
    run(go())
    decision, execution = h.records()[-2:]
    assert decision.KIND == "decision" and decision.outcome == "approve"
    assert isinstance(execution, ExecutionRecord) and execution.decision_id == decision.decision_id
    assert execution.cause == "client_cancelled" and execution.outcome == "failed"
    assert h.sandbox.released == 0 and not h.sandbox.ran
    verifies(h)


def test_shutdown_cancellation_says_shutdown(h):
    async def go():
        gate = asyncio.Event()

        async def behaviour(_args):
            gate.set()
            await asyncio.sleep(3600)
        h.sandbox.behaviour = behaviour
        task = await h.start()
        call = asyncio.ensure_future(h.pipeline.execute(h.call(task)))
        await gate.wait()
        h.pipeline.shutting_down = True
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    run(go())
    assert h.records()[-1].cause == "shutdown"


def test_deadline_cancellation_says_deadline(h):
    import time

    async def go():
        gate = asyncio.Event()

        async def behaviour(_args):
            gate.set()
            await asyncio.sleep(3600)
        h.sandbox.behaviour = behaviour
        task = await h.start()
        call = asyncio.ensure_future(h.pipeline.execute(h.call(task, deadline=time.monotonic())))
        await gate.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    run(go())
    assert h.records()[-1].cause == "deadline"


def test_fake_engine_records_inputs():
    engine = FakeEngine()
    engine.evaluate({"x": 1})
    assert engine.inputs == [{"x": 1}]


def test_fake_sandbox_is_told_to_fail_before_release():
    sb = FakeSandbox(fail_start=SandboxError("x"))
    with pytest.raises(SandboxError):
        asyncio.run(sb.run([], b"{}", 1, None))
