"""The rollback engine in-process, under the shipped policy and the example
registry's compensations: steps through the same pipeline, retries with
backoff, parking, irreversible steps through the approval loop, sagas in
reverse order, idempotent rollback requests, may_roll_back. The sandbox is
the harness's fake, told what each tool answers (the example world's real
services are in tests/test_story_rollback.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from enforcer.audit.records import DecisionRecord, ExecutionRecord, Principal, RollbackRecord
from enforcer.config import RollbackConfig
from enforcer.errors import NotFound, PermissionDenied
from enforcer.pipeline.rollback import compensation_args
from tests.pipeline.harness import AGENT, FakeSandbox, Harness
from tests.pipeline.test_approvals import policy_with, registry_without_connectors, until_final

GOAL = "Book invoice INV-2001: create the record, update the record, send email"
ALICE = Principal(kind="approver", id="alice")


class World:
    """What each fake tool answers, by the args it gets; counts failures to inject."""

    def __init__(self) -> None:
        self.fail_next = 0
        self.calls: list[dict] = []

    async def behaviour(self, args: dict) -> bytes:
        self.calls.append(args)
        if "fields" in args:  # create_record / update_record
            return json.dumps({"record_id": args["record_id"], "rollback_token": f"snap-{len(self.calls)}"}).encode()
        if "to" in args:  # send_email
            return b'{"message_id": "m-1"}'
        if self.fail_next:  # a compensation (delete/restore_record)
            self.fail_next -= 1
            raise RuntimeError("upstream 503")
        return b'{"status": "restored"}'


@pytest.fixture
def w():
    return World()


@pytest.fixture
def h(tmp_path, w):
    async def behaviour(args):
        try:
            return await w.behaviour(args)
        except RuntimeError:
            return b"not json: the tool failed"  # the tool's output is unreadable: a failed run
    harness = Harness(tmp_path, rego_engine=True, registry=registry_without_connectors(),
                      sandbox=FakeSandbox(behaviour=behaviour))
    harness.pipeline.rollbacks.config = RollbackConfig(max_attempts=3, backoff_s=0.001)
    yield harness
    harness.close()


def run(coro):
    return asyncio.run(coro)


async def booked(h: Harness, *, key: str = "") -> tuple[str, str, str]:
    task = await h.start(goal=GOAL, actions=("create_record", "update_record", "send_email"))
    created = await h.pipeline.execute(h.call(task, "create_record", {"record_id": "INV-2001", "fields": {"a": 1}},
                                              idempotency_key=key))
    updated = await h.pipeline.execute(h.call(task, "update_record", {"record_id": "INV-2001", "fields": {"a": 2}}))
    assert created.status == updated.status == "succeeded", (created, updated)
    return task, created.decision.decision_id, updated.decision.decision_id


def test_one_execution_is_rolled_back_through_the_pipeline_and_only_once(h, w):
    async def go():
        task, created, updated = await booked(h)
        step = await h.pipeline.rollbacks.rollback(AGENT, task, updated, None)
        again = await h.pipeline.rollbacks.rollback(AGENT, task, updated, None)
        return updated, step, again
    updated, step, again = run(go())
    assert (step.status, step.compensation_tool, step.attempts) == ("success", "restore_record", 1)
    assert again.status == "already_rolled_back"
    # restore_record got the record id and the snapshot update_record returned.
    assert w.calls[-1] == {"record_id": "INV-2001", "snapshot_id": "snap-2"}
    assert len(w.calls) == 3  # create, update, one restore
    comp = [r for r in h.records() if r.rpc == "Rollback" and isinstance(r, (DecisionRecord, ExecutionRecord))]
    assert [(r.KIND, r.action_name, r.outcome) for r in comp] == [("decision", "restore_record", "approve"),
                                                                 ("execution", "restore_record", "succeeded")]
    assert comp[0].rule == "rollback.compensation" and comp[0].policy_input["compensation"]["of"] == updated
    steps = [r.outcome for r in h.records() if isinstance(r, RollbackRecord)]
    assert steps == ["started", "success", "already_rolled_back"]


def test_a_task_is_rolled_back_newest_first(h, w):
    async def go():
        task, created, updated = await booked(h)
        return created, updated, await h.pipeline.rollbacks.rollback_task(AGENT, task, None)
    created, updated, steps = run(go())
    assert [(s.decision_id, s.compensation_tool, s.status) for s in steps] == [
        (updated, "restore_record", "success"), (created, "delete_record", "success")]
    assert w.calls[-2:] == [{"record_id": "INV-2001", "snapshot_id": "snap-2"}, {"record_id": "INV-2001"}]


def test_a_compensation_that_fails_twice_then_succeeds_ends_in_success(h, w):
    async def go():
        task, _, updated = await booked(h)
        w.fail_next = 2
        return await h.pipeline.rollbacks.rollback(AGENT, task, updated, None)
    step = run(go())
    assert (step.status, step.attempts) == ("success", 3)
    executions = [r for r in h.records() if isinstance(r, ExecutionRecord) and r.rpc == "Rollback"]
    assert [r.outcome for r in executions] == ["failed", "failed", "succeeded"]


def test_a_compensation_that_always_fails_is_parked_and_counted(h, w):
    async def go():
        task, _, updated = await booked(h)
        w.fail_next = 99
        step = await h.pipeline.rollbacks.rollback(AGENT, task, updated, None)
        parked = await h.db.compensations_where(rollback_status=("rollback_failed",))
        w.fail_next = 0  # fixed by an operator: asking again retries the parked step
        retried = await h.pipeline.rollbacks.rollback(AGENT, task, updated, None)
        return step, parked, retried
    step, parked, retried = run(go())
    assert (step.status, step.attempts) == ("rollback_failed", 3) and step.error
    assert [p.decision_id for p in parked] == [step.decision_id] and parked[0].rollback_attempts == 3
    assert h.metrics.rollback_failed.labels(tool="restore_record")._value.get() == 1
    assert retried.status == "success"


def test_rolling_back_an_irreversible_call_asks_a_human_with_full_context(h, w):
    async def go():
        task = await h.start(goal=GOAL, actions=("send_email",))
        sent = await h.pipeline.execute(h.call(task, "send_email", {"to": "partner@example.com", "subject": "x",
                                                                    "body": "booked"}))
        assert sent.status == "pending_approval"  # irreversible: a human first
        await h.pipeline.approvals.resolve(sent.approval_id, approve=True, comment="", approver=ALICE)
        await until_final(h, sent.approval_id)
        step = await h.pipeline.rollbacks.rollback(AGENT, task, sent.decision.decision_id, None)
        a = await h.pipeline.approvals.get(step.approval_id)
        again = await h.pipeline.rollbacks.rollback(AGENT, task, sent.decision.decision_id, None)
        ran_before = len(w.calls)
        await h.pipeline.approvals.resolve(a.approval_id, approve=True, comment="called the partner",
                                           approver=ALICE)
        handled = await until_final(h, a.approval_id)
        after = await h.pipeline.rollbacks.rollback(AGENT, task, sent.decision.decision_id, None)
        return step, a, again, handled, after, ran_before
    step, a, again, handled, after, ran_before = run(go())
    assert step.status == "irreversible" and step.approval_id and again.approval_id == step.approval_id
    assert (a.kind, a.action_name, a.rule, a.status) == ("manual", "send_email", "rollback.irreversible", "pending")
    assert a.args["to"] == "partner@example.com" and "by hand" in a.reason
    assert handled.status == "executed" and handled.result["output"]["handled_by"] == "alice"
    assert len(w.calls) == ran_before  # approving a manual undo runs nothing
    assert after.status == "already_rolled_back"


def test_an_agent_that_may_not_roll_back_is_refused_by_the_policy(h):
    async def go():
        task, _, updated = await booked(h)
        active = policy_with(h)
        agents = dict(active.agents)
        agents[AGENT] = agents[AGENT].model_copy(update={"may_roll_back": False})
        from dataclasses import replace

        from enforcer.config import PolicyConfig
        from enforcer.policy.engine import create_engine
        from enforcer.policy.policyset import build_policy_set
        from tests.conftest import REPO
        config = PolicyConfig(rego_dir=REPO / "rego")
        ps = build_policy_set(config.rego_dir, agents, config, active.registry, None)
        h.holder.swap(replace(active, agents=agents, policy_set=ps, engine=create_engine(ps, config)))
        return await h.pipeline.rollbacks.rollback(AGENT, task, updated, None)
    step = run(go())
    assert step.status == "rollback_failed" and "allowlist.rollback_not_allowed" in step.error


def test_a_rollback_names_its_own_tasks_executions_only(h):
    async def go():
        task, created, _ = await booked(h)
        other = await h.start(goal=GOAL, actions=("create_record",))
        with pytest.raises(NotFound):
            await h.pipeline.rollbacks.rollback(AGENT, other, created, None)
        with pytest.raises(PermissionDenied):
            await h.pipeline.rollbacks.rollback("someone_else", task, created, None)
        with pytest.raises(NotFound):
            await h.pipeline.rollbacks.rollback(AGENT, task, "dec_" + "0" * 32, None)
    run(go())


def test_a_write_cut_off_by_its_timeout_is_unknown_and_still_rolled_back(h, w, tmp_path):
    async def go():
        task = await h.start(goal=GOAL, actions=("update_record",))
        from tests.pipeline.harness import SandboxResult

        async def killed(command, stdin, timeout_s, tools_dir, *, sandbox=None, release=None, sandbox_id=None):
            await release
            return SandboxResult(sandbox_id=sandbox_id or "sbx", exit_code=None, signal=9, stdout=b"", stderr=b"",
                                 timed_out=True, output_truncated=False, duration_s=timeout_s)
        real = h.sandbox.run
        h.sandbox.run = killed
        r = await h.pipeline.execute(h.call(task, "update_record", {"record_id": "INV-9", "fields": {"a": 1}},
                                            idempotency_key="u-9"))
        h.sandbox.run = real
        c = await h.db.get_compensation(r.decision.decision_id)
        step = await h.pipeline.rollbacks.rollback(AGENT, task, r.decision.decision_id, None)
        return r, c, step
    r, c, step = run(go())
    assert r.status == "unknown" and c.outcome == "unknown" and c.rollback_token is None
    execution = [x for x in h.records() if isinstance(x, ExecutionRecord)][0]
    assert execution.outcome == "unknown" and execution.timed_out
    # No token came back: the compensation gets the record and the key, to find what happened (or not).
    assert compensation_args(c) == {"record_id": "INV-9", "idempotency_key": c.idempotency_key}
    assert c.idempotency_key.startswith("aecl-") and step.status == "success"
    assert w.calls[-1] == {"record_id": "INV-9", "idempotency_key": c.idempotency_key}


def test_a_rejected_manual_undo_can_be_asked_again(h, w):
    async def go():
        task = await h.start(goal=GOAL, actions=("send_email",))
        sent = await h.pipeline.execute(h.call(task, "send_email", {"to": "p@example.com", "subject": "x",
                                                                    "body": "y"}))
        await h.pipeline.approvals.resolve(sent.approval_id, approve=True, comment="", approver=ALICE)
        await until_final(h, sent.approval_id)
        first = await h.pipeline.rollbacks.rollback(AGENT, task, sent.decision.decision_id, None)
        await h.pipeline.approvals.resolve(first.approval_id, approve=False, comment="not now", approver=ALICE)
        second = await h.pipeline.rollbacks.rollback(AGENT, task, sent.decision.decision_id, None)
        return first, second
    first, second = run(go())
    assert first.status == second.status == "irreversible" and second.approval_id != first.approval_id


def test_a_compensation_the_policy_blocks_is_parked_and_counted(h):
    async def go():
        task, _, updated = await booked(h)
        from dataclasses import replace
        active = h.holder.current
        # The compensation is not a valid call any more: restore_record left the registry.
        tools = {n: t for n, t in active.registry.tools.items() if n != "restore_record"}
        h.holder.swap(replace(active, registry=active.registry.model_construct(tools_dir=active.registry.tools_dir,
                                                                               tools=tools)))
        return await h.pipeline.rollbacks.rollback(AGENT, task, updated, None)
    step = run(go())
    assert step.status == "rollback_failed" and "not a valid call" in step.error
    assert h.metrics.rollback_failed.labels(tool="restore_record")._value.get() == 1
