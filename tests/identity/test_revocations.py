"""The in-memory mirror of the revocations table, as the authenticator
consults it on every call."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from enforcer.identity.revocations import Revocations
from enforcer.state.store import Revocation

T = 1_796_166_000.0


def agent(agent_id: str, at: float) -> Revocation:
    return Revocation("agent", agent_id, at, "test")


def task(task_id: str, at: float) -> Revocation:
    return Revocation("task", task_id, at, "test")


def test_nothing_is_revoked_by_default():
    r = Revocations()
    assert not r.task_revoked("tsk_1")
    assert not r.agent_refuses("agent_a", 0.0)


def test_an_agent_refuses_what_was_issued_at_or_before_the_revocation():
    r = Revocations([agent("agent_a", T)])
    assert r.agent_refuses("agent_a", T - 3600)
    assert r.agent_refuses("agent_a", T)  # issued_at <= revoked_at: the same instant is refused
    assert not r.agent_refuses("agent_a", T + 1e-6)  # issued after: accepted
    assert not r.agent_refuses("agent_a", T + 60)


def test_an_agent_revocation_touches_no_other_agent_and_no_task():
    r = Revocations([agent("agent_a", T)])
    assert not r.agent_refuses("agent_b", T - 1)
    assert not r.task_revoked("agent_a")  # a task with the agent's name is not the agent


def test_a_task_revocation_is_by_id_and_touches_no_agent():
    r = Revocations([task("tsk_1", T)])
    assert r.task_revoked("tsk_1") and not r.task_revoked("tsk_2")
    assert not r.agent_refuses("tsk_1", T - 1)


def test_a_later_revocation_moves_the_time_forward():
    r = Revocations([agent("agent_a", T)])
    assert not r.agent_refuses("agent_a", T + 10)
    r.add(agent("agent_a", T + 100))
    assert r.agent_refuses("agent_a", T + 10)
    assert not r.agent_refuses("agent_a", T + 101)


def test_an_earlier_revocation_never_moves_the_time_back():
    r = Revocations()
    r.add(agent("agent_a", T + 100))
    r.add(agent("agent_a", T))  # e.g. loaded rows out of order, or a replayed older one
    assert r.agent_refuses("agent_a", T + 50)
    assert r.agent_refuses("agent_a", T + 100)


def test_loading_rows_matches_adding_them():
    rows = [agent("agent_a", T + 5), task("tsk_1", T), agent("agent_a", T + 1), agent("agent_b", T)]
    loaded, added = Revocations(rows), Revocations()
    for row in rows:
        added.add(row)
    for issued in (T, T + 1, T + 4, T + 5, T + 6):
        for a in ("agent_a", "agent_b", "agent_c"):
            assert loaded.agent_refuses(a, issued) == added.agent_refuses(a, issued)
    assert loaded.task_revoked("tsk_1") and added.task_revoked("tsk_1")


times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)


@given(st.lists(times, min_size=1, max_size=12), times)
def test_the_agent_cut_off_is_the_latest_revocation_whatever_the_order(ats, issued):
    """Property: after any sequence of revocations of one agent, a credential
    is refused exactly when it was issued at or before the latest one."""
    r = Revocations()
    for at in ats:
        r.add(agent("agent_a", at))
    assert r.agent_refuses("agent_a", issued) == (issued <= max(ats))
    assert Revocations([agent("agent_a", at) for at in reversed(ats)]).agent_refuses("agent_a", issued) == \
        (issued <= max(ats))
