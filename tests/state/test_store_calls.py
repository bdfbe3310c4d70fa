"""The store's part of the task history and declared resources: every store
must pass these (they run against each implementation in STORES), and a
database made before these columns existed still opens."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from enforcer.errors import StoreError
from enforcer.state.store import Call, Task
from tests.state.test_store_contract import STORES, create, run, task


@pytest.fixture(params=sorted(STORES))
def store(request, tmp_path):
    s = STORES[request.param](tmp_path)
    yield s
    s.close()


def scoped(task_id="tsk_1", resources=("INV-1001", "INV-1003")) -> Task:
    return Task(task_id, "agent_a", "goal", ("update_record",), 1_000.0, 2_000_000_000.0, 0, tuple(resources))


async def record(store, task_id="tsk_1", tool="fire_webhook", outcome="approve", amount=None, resource=None,
                 at=1_000.0, *, commit=True) -> Call:
    async with store.transaction() as tx:
        call = await tx.record_call(task_id, at=at, tool=tool, outcome=outcome, amount=amount, resource=resource)
        if commit:
            await tx.commit()
    return call


# -- declared resources ------------------------------------------------------------


def test_declared_resources_read_back_typed(store):
    async def go():
        await create(store, scoped())
        got = await store.get_task("tsk_1")
        assert got == scoped() and got.declared_resources == ("INV-1001", "INV-1003")
        assert isinstance(got.declared_resources, tuple)
    run(go())


def test_a_task_without_declared_resources_reads_back_empty(store):
    async def go():
        await create(store, task())
        assert (await store.get_task("tsk_1")).declared_resources == ()
    run(go())


def test_a_claim_keeps_the_declared_resources(store):
    async def go():
        await create(store, scoped())
        async with store.transaction() as tx:
            claim = await tx.claim_call("tsk_1", "agent_a", now=1_500.0, budget=5)
            await tx.commit()
        assert claim.consumed and claim.task.declared_resources == ("INV-1001", "INV-1003")
        assert (await store.get_task("tsk_1")).declared_resources == ("INV-1001", "INV-1003")
    run(go())


# -- calls -------------------------------------------------------------------------


def test_calls_are_numbered_per_task_and_read_back_oldest_first(store):
    async def go():
        await create(store, task("tsk_1"))
        await create(store, task("tsk_2"))
        a = await record(store, "tsk_1", "transfer_funds", "escalate", amount=100000, at=1.0)
        b = await record(store, "tsk_2", "fire_webhook", "approve", resource="evt-1", at=2.0)
        c = await record(store, "tsk_1", "fire_webhook", "block", resource="evt-1", at=3.5)
        assert (a.seq, b.seq, c.seq) == (1, 1, 2)
        assert a == Call("tsk_1", 1, 1.0, "transfer_funds", "escalate", 100000, None)
        assert await store.list_calls("tsk_1", limit=10) == [a, c]
        assert await store.list_calls("tsk_2", limit=10) == [b]
        assert await store.list_calls("tsk_missing", limit=10) == []
    run(go())


def test_list_calls_keeps_the_last_ones(store):
    async def go():
        await create(store, task())
        for i in range(5):
            await record(store, resource=f"evt-{i}", at=float(i))
        last = await store.list_calls("tsk_1", limit=2)
        assert [c.seq for c in last] == [4, 5] and [c.resource for c in last] == ["evt-3", "evt-4"]
        assert len(await store.list_calls("tsk_1", limit=200)) == 5
    run(go())


def test_amounts_keep_their_value(store):
    async def go():
        await create(store, task())
        for amount in (100000, 2.5, 0, None, 2**53 + 1):
            await record(store, tool="transfer_funds", amount=amount)
        got = [c.amount for c in await store.list_calls("tsk_1", limit=10)]
        assert got == [100000, 2.5, 0, None, 2**53 + 1]
        assert isinstance(got[0], int)
        big = await record(store, tool="transfer_funds", amount=2**70)  # beyond SQLite's INTEGER: kept as a REAL
        assert big.amount == float(2**70)
    run(go())


def test_a_call_not_committed_is_not_history(store):
    async def go():
        await create(store, task())
        await record(store, commit=False)
        assert await store.list_calls("tsk_1", limit=10) == []
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.record_call("tsk_1", at=1.0, tool="t", outcome="approve", amount=None, resource=None)
                raise RuntimeError("the decision's append failed")
        assert await store.list_calls("tsk_1", limit=10) == []
        # The seq of a rolled-back call is used again: nothing the log does not explain remains.
        assert (await record(store)).seq == 1
    run(go())


def test_a_transaction_sees_its_own_calls_and_readers_do_not(store):
    async def go():
        await create(store, task())
        await record(store, resource="evt-1")
        async with store.transaction() as tx:
            await tx.claim_call("tsk_1", "agent_a", now=1_500.0, budget=5)
            await tx.record_call("tsk_1", at=2.0, tool="fire_webhook", outcome="approve", amount=None,
                                 resource="evt-2")
            assert [c.resource for c in await tx.list_calls("tsk_1", limit=10)] == ["evt-1", "evt-2"]
            assert [c.resource for c in await store.list_calls("tsk_1", limit=10)] == ["evt-1"]
            await tx.commit()
        assert [c.seq for c in await store.list_calls("tsk_1", limit=10)] == [1, 2]
    run(go())


def test_a_call_of_a_task_that_does_not_exist_is_refused(store):
    async def go():
        with pytest.raises(StoreError):
            await record(store, "tsk_missing")
    run(go())


def test_an_unknown_outcome_is_refused(store):
    async def go():
        await create(store, task())
        with pytest.raises(StoreError):
            await record(store, outcome="maybe")
    run(go())


def test_concurrent_transactions_number_calls_without_gaps_or_repeats(store):
    async def go():
        await create(store, task())

        async def one(i: int) -> int:
            async with store.transaction() as tx:
                history = await tx.list_calls("tsk_1", limit=200)
                await asyncio.sleep(0)  # yield while holding the transaction
                call = await tx.record_call("tsk_1", at=float(i), tool="t", outcome="approve", amount=None,
                                            resource=None)
                await tx.commit()
            assert call.seq == len(history) + 1  # each saw every call before its own
            return call.seq
        seqs = await asyncio.gather(*(one(i) for i in range(20)))
        assert sorted(seqs) == list(range(1, 21))
    run(go())


# -- a database made by an earlier version ----------------------------------------------

OLD_SCHEMA = """
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    declared_goal TEXT NOT NULL,
    declared_actions TEXT NOT NULL,
    started_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    calls_so_far INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE approvals (
    approval_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(task_id),
    decision_id TEXT NOT NULL,
    action_name TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE revocations (
    target TEXT NOT NULL CHECK (target IN ('task', 'agent')),
    target_id TEXT NOT NULL,
    revoked_at REAL NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (target, target_id)
);
"""


def old_database(path) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO tasks VALUES ('tsk_old', 'agent_a', 'goal', '[\"read_invoice\"]', 1000.0, "
               "2000000000.0, 3)")
    db.commit()
    db.close()


def test_a_state_database_from_before_declared_resources_still_opens(tmp_path):
    from enforcer.state.sqlite import SqliteStateStore

    path = tmp_path / "state.db"
    old_database(path)

    async def go(store):
        old = await store.get_task("tsk_old")
        assert old == Task("tsk_old", "agent_a", "goal", ("read_invoice",), 1000.0, 2_000_000_000.0, 3, ())
        async with store.transaction() as tx:
            claim = await tx.claim_call("tsk_old", "agent_a", now=1_500.0, budget=50)
            await tx.record_call("tsk_old", at=1_500.0, tool="read_invoice", outcome="approve", amount=None,
                                 resource=None)
            await tx.create_task(scoped("tsk_new"))
            await tx.commit()
        assert claim.task.calls_so_far == 3 and claim.task.declared_resources == ()
        assert [c.seq for c in await store.list_calls("tsk_old", limit=10)] == [1]
        assert (await store.get_task("tsk_new")).declared_resources == ("INV-1001", "INV-1003")

    store = SqliteStateStore(path)
    try:
        run(go(store))
    finally:
        store.close()
    again = SqliteStateStore(path)  # the migration is idempotent
    try:
        assert run(again.get_task("tsk_new")).declared_resources == ("INV-1001", "INV-1003")
        assert len(run(again.list_calls("tsk_old", limit=10))) == 1
    finally:
        again.close()
    columns = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(tasks)")]
    assert columns.count("declared_resources") == 1


def test_two_stores_opening_one_old_database_add_the_column_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from enforcer.state.sqlite import SqliteStateStore

    path = tmp_path / "state.db"
    old_database(path)
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: SqliteStateStore(path), range(4)))
    try:
        assert run(stores[0].get_task("tsk_old")).declared_resources == ()
    finally:
        for s in stores:
            s.close()
