"""The attention selection alone: which executions and approvals need a
human to check the target system (enforcer.console.attention)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from enforcer.audit.records import ApprovalRecord, DecisionRecord, ExecutionRecord
from enforcer.audit.verified import VerifiedEntry
from enforcer.console.attention import UNKNOWN_CAUSES, select_attention
from enforcer.state.store import Approval

WRITE = {"transfer_funds", "update_record"}


def execution(tool: str = "transfer_funds", outcome: str = "failed", *, cause: str = "", timed_out: bool = False,
              at: str = "2026-12-01T10:00:00.000000Z", approval_id: str | None = None) -> ExecutionRecord:
    return ExecutionRecord(timestamp=at, agent_id="a", task_id="tsk_1", rpc="Execute", action_name=tool,
                           outcome=outcome, reason=f"{outcome} {cause}", cause=cause, timed_out=timed_out,
                           hitl_approval_id=approval_id)


def entries(*records) -> list[VerifiedEntry]:
    return [VerifiedEntry(i, "audit.jsonl", i + 1, b"", "kid", r, b"") for i, r in enumerate(records)]


def approval(status: str = "failed", cause: str = "unknown", approval_id: str = "apr_1",
             updated_at: float = 1_796_000_000.0) -> Approval:
    return Approval(approval_id=approval_id, task_id="tsk_1", decision_id="dec_1", action_name="transfer_funds",
                    created_at=updated_at - 10, expires_at=updated_at + 600, status=status,  # type: ignore[arg-type]
                    agent_id="a", result={"status": "failed", "error": "interrupted", "cause": cause},
                    updated_at=updated_at)


def test_a_failed_write_tool_needs_attention_a_failed_read_tool_does_not() -> None:
    got = select_attention(entries(execution("transfer_funds"), execution("read_invoice")), [], WRITE)
    assert [(i.why, i.tool) for i in got] == [("failed_write", "transfer_funds")]


def test_a_succeeded_write_needs_no_attention() -> None:
    assert select_attention(entries(execution(outcome="succeeded")), [], WRITE) == []


def test_a_write_that_never_ran_needs_no_attention() -> None:
    for cause in ("sandbox_unavailable", "sandbox_busy", "store_failed"):
        assert select_attention(entries(execution(cause=cause)), [], WRITE) == [], cause


def test_timed_out_and_interrupted_calls_have_an_unknown_outcome_whatever_the_tool() -> None:
    recs = [execution("read_invoice", timed_out=True)] + [execution("read_invoice", cause=c) for c in
                                                           sorted(UNKNOWN_CAUSES)]
    got = select_attention(entries(*recs), [], WRITE)
    assert len(got) == 1 + len(UNKNOWN_CAUSES) and {i.why for i in got} == {"unknown_outcome"}
    assert got[-1].cause in UNKNOWN_CAUSES | {"timed_out"}


def test_other_records_are_ignored() -> None:
    d = DecisionRecord(timestamp="2026-12-01T10:00:00Z", rpc="Execute", action_name="transfer_funds",
                       outcome="escalate", gate="hitl", rule="r")
    a = ApprovalRecord(timestamp="2026-12-01T10:00:00Z", rpc="Console", action_name="transfer_funds",
                       outcome="failed", transition="failed", from_status="executing", args_digest="sha256:x",
                       expires_at="2026-12-01T11:00:00Z")
    assert select_attention(entries(d, a), [], WRITE) == []


def test_an_interrupted_approval_is_listed_once_and_a_not_run_one_not_at_all() -> None:
    got = select_attention([], [approval(), approval("failed", "not_run", "apr_2"), approval("executed", "", "apr_3")],
                           WRITE)
    assert [(i.why, i.source, i.approval_id) for i in got] == [("unknown_outcome", "approval", "apr_1")]
    # with its execution entry in the log: only the log's item
    got = select_attention(entries(execution(cause="shutdown", approval_id="apr_1")), [approval()], WRITE)
    assert [(i.source, i.approval_id, i.cause) for i in got] == [("log", "apr_1", "shutdown")]


def test_newest_first() -> None:
    got = select_attention(entries(execution(at="2026-12-01T09:00:00.000000Z"),
                                   execution(at="2026-12-01T11:00:00.000000Z")),
                           [approval(updated_at=1_796_000_000.0)], WRITE)
    assert [i.at for i in got] == sorted((i.at for i in got), reverse=True)


@given(st.lists(st.tuples(st.sampled_from(["transfer_funds", "read_invoice", "update_record"]),
                          st.sampled_from(["succeeded", "failed"]),
                          st.sampled_from(["", "sandbox_unavailable", *sorted(UNKNOWN_CAUSES)]),
                          st.booleans()), max_size=20))
def test_property_every_item_has_a_reason_and_nothing_harmless_is_listed(calls) -> None:
    recs = [execution(t, o, cause=c, timed_out=to) for t, o, c, to in calls]
    got = select_attention(entries(*recs), [], WRITE)
    expected = sum(1 for t, o, c, to in calls
                   if to or c in UNKNOWN_CAUSES or (o != "succeeded" and t in WRITE and not c))
    assert len(got) == expected
    for i in got:
        assert i.why in ("unknown_outcome", "failed_write") and i.source == "log" and i.seq is not None
        if i.why == "failed_write":
            assert i.tool in WRITE


def step(outcome: str, of: str = "dec_1", at: str = "2026-12-01T11:00:00.000000Z"):
    from enforcer.audit.records import RollbackRecord
    return RollbackRecord(timestamp=at, agent_id="a", task_id="tsk_1", rpc="Rollback", action_name="update_record",
                          outcome=outcome, reason=outcome, original_decision_id=of, compensation_tool="restore_record",
                          error="upstream 503" if outcome == "rollback_failed" else "")


def test_an_unknown_outcome_logged_as_such_needs_attention_until_it_is_rolled_back() -> None:
    unknown = ExecutionRecord(timestamp="2026-12-01T10:00:00.000000Z", agent_id="a", task_id="tsk_1", rpc="Recover",
                              action_name="update_record", outcome="unknown", reason="service stopped",
                              decision_id="dec_1", cause="service_stopped")
    assert [i.why for i in select_attention(entries(unknown), [], WRITE)] == ["unknown_outcome"]
    assert select_attention(entries(unknown, step("started"), step("success")), [], WRITE) == []


def test_a_parked_rollback_needs_attention_until_a_retry_succeeds() -> None:
    got = select_attention(entries(step("started"), step("rollback_failed")), [], WRITE)
    assert [(i.why, i.tool, i.reason, i.cause) for i in got] == [
        ("rollback_failed", "update_record", "upstream 503", "restore_record")]
    assert select_attention(entries(step("rollback_failed"), step("started"), step("success")), [], WRITE) == []


def test_a_compensations_own_failed_attempts_are_its_steps_story_not_items() -> None:
    attempt = ExecutionRecord(timestamp="2026-12-01T10:00:00.000000Z", agent_id="a", task_id="tsk_1", rpc="Rollback",
                              action_name="restore_record", outcome="failed", reason="503")
    assert select_attention(entries(attempt), [], WRITE | {"restore_record"}) == []
