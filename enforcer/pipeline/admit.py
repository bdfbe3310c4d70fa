"""Stage 1, admit: is this a well-formed call, by the owner of a live task?

Invariants:
- the request's fields are checked before anything else reads them;
- ownership, expiry and budget are checked and the call counted in one
  atomic step of the store (Execute), inside the caller's transaction, so a
  refused call (unknown task, a foreign agent) counts nothing;
- a Decide (dry run) counts nothing at all;
- errors are raised (AeclError), never logged here: the pipeline logs them
  as `rejected`, once.
"""

from __future__ import annotations

from dataclasses import dataclass

from enforcer.config import LimitsConfig
from enforcer.manifests import ToolSpec
from enforcer.pipeline.request import CallRequest
from enforcer.pipeline.validate import validate_call
from enforcer.policy.holder import ActivePolicy
from enforcer.state.store import StateStore, StoreTx, Task, check_owner


@dataclass(frozen=True)
class Admitted:
    tool: ToolSpec
    task: Task  # as it was before this call


async def admit(req: CallRequest, active: ActivePolicy, limits: LimitsConfig, now: float, *,
                store: StateStore, tx: StoreTx | None) -> Admitted:
    """With `tx`, count the call (Execute); without, only look (Decide)."""
    tool = validate_call(req, active.registry, limits)
    if tx is None:
        task = check_owner(await store.get_task(req.task_id), req.task_id, req.agent_id)
    else:
        claim = await tx.claim_call(req.task_id, req.agent_id, now=now, budget=active.call_budget(req.agent_id))
        task = claim.task
    return Admitted(tool, task)
