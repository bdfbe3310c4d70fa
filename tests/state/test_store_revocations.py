"""The store's side of revocation (issue 12): the revocations table, ending
tasks, the live tasks of an agent and cancelling pending approvals. Real
SQLite on a real file; each test runs against every store in STORES."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.errors import StoreError
from enforcer.state.sqlite import SqliteStateStore
from enforcer.state.store import Approval, Revocation, Task
from tests.state.test_store_contract import STORES

T = 1_796_166_000.0


@pytest.fixture(params=sorted(STORES))
def store(request, tmp_path):
    s = STORES[request.param](tmp_path)
    yield s
    s.close()


def run(coro):
    return asyncio.run(coro)


def task(task_id: str, agent: str = "agent_a", *, started: float = T, expires: float = T + 1200) -> Task:
    return Task(task_id, agent, "goal", ("read_invoice",), started, expires, 0)


def approval(approval_id: str, task_id: str, status: str = "pending") -> Approval:
    return Approval(approval_id, task_id, f"dec_{approval_id}", "transfer_funds", T, T + 600, status)  # type: ignore[arg-type]


async def setup(store, tasks=(), approvals=()) -> None:
    async with store.transaction() as tx:
        for t in tasks:
            await tx.create_task(t)
        for a in approvals:
            await tx.create_approval(a)
        await tx.commit()


async def revoke(store, *rows: Revocation) -> None:
    async with store.transaction() as tx:
        for row in rows:
            await tx.revoke(row)
        await tx.commit()


# -- revoke --------------------------------------------------------------------------


def test_a_committed_revocation_reads_back(store):
    async def go():
        assert await store.list_revocations() == []
        await revoke(store, Revocation("task", "tsk_1", T, "leaked token"))
        assert await store.list_revocations() == [Revocation("task", "tsk_1", T, "leaked token")]
    run(go())


def test_revoke_is_an_upsert_keeping_the_latest_time(store):
    async def go():
        await revoke(store, Revocation("agent", "agent_a", T + 100, "first"))
        await revoke(store, Revocation("agent", "agent_a", T, "older"))  # never moves back
        rows = await store.list_revocations()
        assert len(rows) == 1 and rows[0].revoked_at == T + 100
        await revoke(store, Revocation("agent", "agent_a", T + 200, "later"))  # moves forward
        rows = await store.list_revocations()
        assert len(rows) == 1 and rows[0].revoked_at == T + 200 and rows[0].reason == "later"
    run(go())


def test_a_task_and_an_agent_of_the_same_id_are_separate_rows(store):
    async def go():
        await revoke(store, Revocation("task", "x", T, "a"), Revocation("agent", "x", T + 1, "b"))
        rows = await store.list_revocations()
        assert sorted((r.target, r.target_id) for r in rows) == [("agent", "x"), ("task", "x")]
    run(go())


def test_an_unknown_target_kind_is_refused(store):
    async def go():
        with pytest.raises(StoreError):
            await revoke(store, Revocation("approver", "alice", T, "x"))  # type: ignore[arg-type]
        assert await store.list_revocations() == []
    run(go())


def test_a_revocation_is_not_visible_before_commit_and_rollback_leaves_nothing(store):
    async def go():
        async with store.transaction() as tx:
            await tx.revoke(Revocation("agent", "agent_a", T, "x"))
            assert await store.list_revocations() == []
            await tx.rollback()
        assert await store.list_revocations() == []
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.revoke(Revocation("agent", "agent_a", T, "x"))
                raise RuntimeError("the audit append failed")
        assert await store.list_revocations() == []
        async with store.transaction() as tx:  # left without commit
            await tx.revoke(Revocation("agent", "agent_a", T, "x"))
        assert await store.list_revocations() == []
    run(go())


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["agent_a", "agent_b"]),
                          st.floats(min_value=0, max_value=4e9, allow_nan=False)), min_size=1, max_size=8))
def test_each_target_keeps_the_max_of_its_revocation_times(rows):
    """Property: whatever order revocations commit in (one per transaction),
    each target keeps one row with the latest time."""
    with tempfile.TemporaryDirectory() as tmp:
        s = SqliteStateStore(Path(tmp) / "s.db")
        try:
            async def go():
                for agent_id, at in rows:
                    await revoke(s, Revocation("agent", agent_id, at, "r"))
                got = {r.target_id: r.revoked_at for r in await s.list_revocations()}
                want: dict[str, float] = {}
                for agent_id, at in rows:
                    want[agent_id] = max(at, want.get(agent_id, at))
                assert got == want
            run(go())
        finally:
            s.close()


# -- end_tasks ---------------------------------------------------------------------------


def test_end_tasks_shortens_a_task_and_never_lengthens_one(store):
    async def go():
        await setup(store, [task("tsk_live", expires=T + 1200), task("tsk_short", expires=T + 10),
                            task("tsk_other", expires=T + 1200)])
        async with store.transaction() as tx:
            await tx.end_tasks(["tsk_live", "tsk_short", "tsk_missing"], at=T + 60)
            await tx.commit()
        assert (await store.get_task("tsk_live")).expires_at == T + 60
        assert (await store.get_task("tsk_short")).expires_at == T + 10  # already ending earlier
        assert (await store.get_task("tsk_other")).expires_at == T + 1200  # not named
        assert await store.get_task("tsk_missing") is None  # nothing created
    run(go())


def test_end_tasks_is_invisible_before_commit_and_undone_by_rollback(store):
    async def go():
        await setup(store, [task("tsk_1")])
        async with store.transaction() as tx:
            await tx.end_tasks(["tsk_1"], at=T)
            assert (await store.get_task("tsk_1")).expires_at == T + 1200
        assert (await store.get_task("tsk_1")).expires_at == T + 1200
    run(go())


def test_end_tasks_of_no_tasks_does_nothing(store):
    async def go():
        await setup(store, [task("tsk_1")])
        async with store.transaction() as tx:
            await tx.end_tasks([], at=T)
            await tx.commit()
        assert (await store.get_task("tsk_1")).expires_at == T + 1200
    run(go())


# -- live_tasks_of ------------------------------------------------------------------------


def test_live_tasks_of_lists_the_agents_unexpired_tasks_only(store):
    async def go():
        await setup(store, [task("tsk_2", started=T + 5), task("tsk_1", started=T),
                            task("tsk_old", started=T - 5000, expires=T - 3800),
                            task("tsk_edge", started=T, expires=T + 100),
                            task("tsk_b", "agent_b")])
        async with store.transaction() as tx:
            assert await tx.live_tasks_of("agent_a", now=T + 100) == ["tsk_1", "tsk_2"]  # by start; edge ended
            assert await tx.live_tasks_of("agent_a", now=T + 99) == ["tsk_1", "tsk_edge", "tsk_2"]
            assert await tx.live_tasks_of("agent_b", now=T + 100) == ["tsk_b"]
            assert await tx.live_tasks_of("agent_c", now=T) == []
    run(go())


def test_live_tasks_of_sees_its_own_transactions_writes(store):
    async def go():
        await setup(store, [task("tsk_1"), task("tsk_2")])
        async with store.transaction() as tx:
            await tx.create_task(task("tsk_3", started=T + 1))
            await tx.end_tasks(["tsk_1"], at=T)
            assert await tx.live_tasks_of("agent_a", now=T) == ["tsk_2", "tsk_3"]
    run(go())


# -- cancel_pending_approvals --------------------------------------------------------------


def test_cancel_pending_approvals_touches_only_pending_ones_of_the_named_tasks(store):
    async def go():
        await setup(store, [task("tsk_1"), task("tsk_2"), task("tsk_3")],
                    [approval("apr_1", "tsk_1"), approval("apr_2", "tsk_1"),
                     approval("apr_done", "tsk_1", "approved"), approval("apr_run", "tsk_2", "executing"),
                     approval("apr_3", "tsk_2"), approval("apr_other", "tsk_3")])
        async with store.transaction() as tx:
            assert len(await tx.cancel_pending_approvals(["tsk_1", "tsk_2"])) == 3
            await tx.commit()
        status = {a: (await store.get_approval(a)).status
                  for a in ("apr_1", "apr_2", "apr_done", "apr_run", "apr_3", "apr_other")}
        assert status == {"apr_1": "cancelled", "apr_2": "cancelled", "apr_done": "approved",
                          "apr_run": "executing", "apr_3": "cancelled", "apr_other": "pending"}
        async with store.transaction() as tx:  # a second time: nothing left pending
            assert await tx.cancel_pending_approvals(["tsk_1", "tsk_2"]) == []
            assert await tx.cancel_pending_approvals([]) == []
            assert await tx.cancel_pending_approvals(["tsk_missing"]) == []
    run(go())


def test_cancelled_approvals_are_invisible_before_commit_and_undone_by_rollback(store):
    async def go():
        await setup(store, [task("tsk_1")], [approval("apr_1", "tsk_1")])
        async with store.transaction() as tx:
            assert [a.approval_id for a in await tx.cancel_pending_approvals(["tsk_1"])] == ["apr_1"]
            assert (await store.get_approval("apr_1")).status == "pending"
            await tx.rollback()
        assert (await store.get_approval("apr_1")).status == "pending"
    run(go())


# -- a whole revocation, as the pipeline makes it ----------------------------------------------


def test_a_whole_agent_revocation_commits_together_or_not_at_all(store):
    async def body(tx, now):
        tasks = await tx.live_tasks_of("agent_a", now=now)
        await tx.revoke(Revocation("agent", "agent_a", now, "compromised"))
        await tx.end_tasks(tasks, at=now)
        return tasks, await tx.cancel_pending_approvals(tasks)

    async def go():
        await setup(store, [task("tsk_1"), task("tsk_2", started=T + 1), task("tsk_b", "agent_b")],
                    [approval("apr_1", "tsk_1"), approval("apr_b", "tsk_b")])
        now = T + 30
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await body(tx, now)
                raise RuntimeError("the revocation entry could not be appended")
        assert await store.list_revocations() == []
        assert (await store.get_task("tsk_1")).expires_at == T + 1200
        assert (await store.get_approval("apr_1")).status == "pending"

        async with store.transaction() as tx:
            tasks, cancelled = await body(tx, now)
            await tx.commit()
        assert tasks == ["tsk_1", "tsk_2"] and [a.approval_id for a in cancelled] == ["apr_1"]
        assert await store.list_revocations() == [Revocation("agent", "agent_a", now, "compromised")]
        assert [(await store.get_task(t)).expires_at for t in ("tsk_1", "tsk_2", "tsk_b")] == [now, now, T + 1200]
        assert (await store.get_approval("apr_1")).status == "cancelled"
        assert (await store.get_approval("apr_b")).status == "pending"
        async with store.transaction() as tx:
            assert await tx.live_tasks_of("agent_a", now=now) == []
    run(go())


def test_revocations_survive_reopening_the_database(tmp_path):
    async def write():
        s = SqliteStateStore(tmp_path / "state.db")
        try:
            await revoke(s, Revocation("agent", "agent_a", T, "x"), Revocation("task", "tsk_9", T - 1, "y"))
        finally:
            s.close()

    async def read():
        s = SqliteStateStore(tmp_path / "state.db")
        try:
            return await s.list_revocations()
        finally:
            s.close()
    run(write())
    assert run(read()) == [Revocation("task", "tsk_9", T - 1, "y"), Revocation("agent", "agent_a", T, "x")]


def test_the_reason_stays_with_the_time_it_was_given_at(store):
    run(revoke(store, Revocation("agent", "agent_a", T + 200, "later one"),
               Revocation("agent", "agent_a", T + 100, "older one")))
    (row,) = run(store.list_revocations())
    assert (row.revoked_at, row.reason) == (T + 200, "later one")


def test_tasks_of_lists_ended_tasks_too(store):
    run(setup(store, [task("t1", expires=T + 10), task("t2"), task("t3", agent="agent_b")]))

    async def read():
        async with store.transaction() as tx:
            return await tx.tasks_of("agent_a")
    assert run(read()) == ["t1", "t2"]
