"""The contract every state store must pass (SQLite today; PostgreSQL will
be added to STORES). Each test runs against every implementation."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.errors import NotFound, PermissionDenied, StoreError
from enforcer.state.sqlite import SqliteStateStore
from enforcer.state.store import Approval, Task

STORES = {
    "sqlite-file": lambda tmp: SqliteStateStore(tmp / "state.db"),
}


@pytest.fixture(params=sorted(STORES))
def make_store(request, tmp_path):
    made = []

    def make():
        store = STORES[request.param](tmp_path)
        made.append(store)
        return store
    yield make
    for s in made:
        s.close()


def task(task_id="tsk_1", agent="agent_a", expires=2_000_000_000.0, calls=0) -> Task:
    return Task(task_id, agent, "goal", ("read_invoice",), 1_000.0, expires, calls)


def run(coro):
    return asyncio.run(coro)


async def create(store, t: Task) -> None:
    async with store.transaction() as tx:
        await tx.create_task(t)
        await tx.commit()


def test_a_committed_task_reads_back_typed(make_store):
    store = make_store()

    async def go():
        await create(store, task())
        got = await store.get_task("tsk_1")
        assert got == task() and isinstance(got.declared_actions, tuple)
        assert await store.get_task("tsk_missing") is None
    run(go())


def test_leaving_a_transaction_without_commit_rolls_back(make_store):
    store = make_store()

    async def go():
        async with store.transaction() as tx:
            await tx.create_task(task())
        assert await store.get_task("tsk_1") is None
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.create_task(task("tsk_2"))
                raise RuntimeError("boom")
        assert await store.get_task("tsk_2") is None
    run(go())


def test_readers_do_not_see_a_transaction_before_it_commits(make_store):
    store = make_store()

    async def go():
        async with store.transaction() as tx:
            await tx.create_task(task())
            assert await store.get_task("tsk_1") is None
            await tx.commit()
        assert await store.get_task("tsk_1") is not None
    run(go())


def test_claim_counts_and_returns_the_task_before_the_call(make_store):
    store = make_store()

    async def go():
        await create(store, task())
        async with store.transaction() as tx:
            claim = await tx.claim_call("tsk_1", "agent_a", now=1_500.0, budget=5)
            await tx.commit()
        assert claim.consumed and claim.task.calls_so_far == 0
        assert (await store.get_task("tsk_1")).calls_so_far == 1
    run(go())


@pytest.mark.parametrize("who,error", [("agent_b", PermissionDenied), ("agent_a", NotFound)])
def test_claim_refuses_a_foreign_agent_or_unknown_task_and_counts_nothing(make_store, who, error):
    store = make_store()

    async def go():
        await create(store, task())
        async with store.transaction() as tx:
            with pytest.raises(error):
                await tx.claim_call("tsk_1" if error is PermissionDenied else "tsk_x", who, now=1_500.0,
                                    budget=5)
            await tx.commit()
        assert (await store.get_task("tsk_1")).calls_so_far == 0
    run(go())


@pytest.mark.parametrize("now,calls,budget", [(3e9, 0, 5), (1_500.0, 5, 5), (1_500.0, 0, 0)])
def test_claim_of_an_expired_or_spent_task_counts_nothing(make_store, now, calls, budget):
    store = make_store()

    async def go():
        await create(store, task(calls=calls))
        async with store.transaction() as tx:
            claim = await tx.claim_call("tsk_1", "agent_a", now=now, budget=budget)
            await tx.commit()
        assert not claim.consumed and claim.task.calls_so_far == calls
        assert (await store.get_task("tsk_1")).calls_so_far == calls
    run(go())


def test_approvals_commit_with_their_transaction(make_store):
    store = make_store()
    approval = Approval("apr_1", "tsk_1", "dec_1", "transfer_funds", 1.0, 2.0, "pending")

    async def go():
        await create(store, task())
        async with store.transaction() as tx:
            await tx.create_approval(approval)
        assert await store.get_approval("apr_1") is None
        async with store.transaction() as tx:
            await tx.create_approval(approval)
            await tx.commit()
        assert await store.get_approval("apr_1") == approval
    run(go())


def test_a_finished_transaction_refuses_more_work(make_store):
    store = make_store()

    async def go():
        async with store.transaction() as tx:
            await tx.commit()
            with pytest.raises(StoreError):
                await tx.create_task(task())
    run(go())


def test_a_duplicate_task_is_a_store_error(make_store):
    store = make_store()

    async def go():
        await create(store, task())
        with pytest.raises(StoreError):
            await create(store, task())
    run(go())


def test_a_transaction_releases_others_once_it_commits(make_store):
    """A committed transaction object may live on (the sandbox runs then)
    without holding up the next transaction."""
    store = make_store()

    async def go():
        tx = store.transaction()
        await tx.__aenter__()
        await tx.create_task(task())
        await tx.commit()
        await asyncio.wait_for(create(store, task("tsk_2")), 5)
        await tx.__aexit__(None, None, None)
    run(go())


@settings(max_examples=25, deadline=None)
@given(budget=st.integers(min_value=0, max_value=12), callers=st.integers(min_value=1, max_value=20))
def test_concurrent_claims_never_exceed_the_budget(budget, callers):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStateStore(Path(tmp) / "s.db")
        try:
            async def one():
                async with store.transaction() as tx:
                    claim = await tx.claim_call("tsk_1", "agent_a", now=1_500.0, budget=budget)
                    await tx.commit()
                    return claim

            async def go():
                await create(store, task())
                claims = await asyncio.gather(*(one() for _ in range(callers)))
                consumed = sorted(c.task.calls_so_far for c in claims if c.consumed)
                assert consumed == list(range(min(budget, callers)))
                assert (await store.get_task("tsk_1")).calls_so_far == min(budget, callers)
            run(go())
        finally:
            store.close()


def test_a_corrupt_database_file_is_a_store_error_naming_it(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=str(path)):
        SqliteStateStore(path)


def test_idempotency_keys_are_kept_until_their_retention_ends(make_store):
    from enforcer.state.store import IdempotencyRecord
    store = make_store()

    async def go():
        await create(store, task("tsk_k"))
        async with store.transaction() as tx:
            for key, expires, status in (("old", 50.0, "done"), ("new", 500.0, "done"), ("running", 50.0, "running")):
                await tx.put_idempotency(IdempotencyRecord("agent_a", "tsk_k", key, "t", "sha256:x", "dec", status,
                                                           {}, 1.0, expires))
            await tx.commit()
        assert await store.prune_idempotency(now=100.0) == 1
        kept = [k for k in ("old", "new", "running") if await store.get_idempotency("agent_a", "tsk_k", k)]
        assert kept == ["new", "running"]  # a call still running is never forgotten
    run(go())
