"""Stage 1, admit: is this a well-formed call, by the owner of a live task?

Invariants:
- the request's fields are checked before anything else reads them;
- ownership, expiry and budget are checked and the call counted in one
  atomic step of the store (Execute), inside the caller's transaction, so a
  refused call (unknown task, a foreign agent) counts nothing;
- a Decide (dry run) counts nothing at all;
- the task's history (its earlier calls, the last MAX_HISTORY of them) is
  read in the same transaction as the claim (Execute), so concurrent calls
  of one task never decide on the same history; a Decide reads the
  committed history;
- errors are raised (AeclError), never logged here: the pipeline logs them
  as `rejected`, once.
"""

from __future__ import annotations

from dataclasses import dataclass

from enforcer.config import LimitsConfig
from enforcer.manifests import ToolSpec
from enforcer.pipeline.policy_input import MAX_HISTORY
from enforcer.pipeline.request import CallRequest
from enforcer.pipeline.validate import validate_call
from enforcer.policy.holder import ActivePolicy
from enforcer.state.store import Call, StateStore, StoreTx, Task, check_owner


@dataclass(frozen=True)
class Admitted:
    tool: ToolSpec
    task: Task  # as it was before this call
    # The task's earlier calls, oldest first (the last MAX_HISTORY).
    history: tuple[Call, ...] = ()
    history_truncated: bool = False  # older calls were left out


async def admit(req: CallRequest, active: ActivePolicy, limits: LimitsConfig, now: float, *,
                store: StateStore, tx: StoreTx | None) -> Admitted:
    """With `tx`, count the call (Execute); without, only look (Decide)."""
    tool = validate_call(req, active.registry, limits)
    if tx is None:
        task = check_owner(await store.get_task(req.task_id), req.task_id, req.agent_id)
        calls = await store.list_calls(task.task_id, limit=MAX_HISTORY + 1)
    else:
        claim = await tx.claim_call(req.task_id, req.agent_id, now=now, budget=active.call_budget(req.agent_id))
        task = claim.task
        calls = await tx.list_calls(task.task_id, limit=MAX_HISTORY + 1)
    return Admitted(tool, task, tuple(calls[-MAX_HISTORY:]), history_truncated=len(calls) > MAX_HISTORY)
