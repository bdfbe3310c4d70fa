"""An in-process pipeline: real SQLite in a temp dir, the real audit log, a
fake policy engine and a fake sandbox runner that can be told to fail. No
server process. The fakes stand in for the two parts whose own tests are
elsewhere (tests/policy, tests/sandbox); everything between them is real.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enforcer.audit.keys import generate_keypair, load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.audit.records import parse_record
from enforcer.config import LimitsConfig, PolicyConfig, SandboxConfig
from enforcer.errors import AeclError, PolicyError, SandboxError, StoreError
from enforcer.manifests import load_agents, load_registry
from enforcer.metrics import Metrics
from enforcer.pipeline.pipeline import Pipeline
from enforcer.pipeline.request import CallRequest, StartTaskRequest
from enforcer.policy.holder import ActivePolicy, PolicyHolder
from enforcer.policy.policyset import build_policy_set
from enforcer.sandbox.runner import SandboxResult
from enforcer.state.sqlite import SqliteStateStore
from tests.conftest import EXAMPLES, REPO

AGENT = "finance_agent_v2"


def answer(outcome: str = "approve", **kw: Any) -> dict[str, Any]:
    """A well-formed policy answer."""
    doc = {"outcome": outcome, "reason": kw.pop("reason", f"test says {outcome}"), "risk_score": 0.1,
           "gate": "test", "rule": f"test.{outcome}", "risk_flags": [], "risk_weights": {},
           "approval_ttl_seconds": 600 if outcome == "escalate" else 0}
    doc.update(kw)
    return doc


class FakeEngine:
    """Answers with `answer_for(policy_input)`; raise PolicyError to fail."""

    name = "fake"
    revision = "sha256:fake"
    blocking = False

    def __init__(self, answer_for: Callable[[dict], Any] = lambda _i: answer()) -> None:
        self.answer_for = answer_for
        self.inputs: list[dict] = []

    def evaluate(self, policy_input: dict) -> Any:
        self.inputs.append(policy_input)
        return self.answer_for(policy_input)

    def derive(self, policy_set):  # pragma: no cover - no reloads in-process
        return self

    def close(self) -> None:
        pass


@dataclass
class FakeSandbox:
    """The sandbox backend's contract without bubblewrap: waits for `release`
    like the real runner (re-raising its failure, the tool unreleased), then
    "runs" by calling `behaviour` (an async callable returning stdout bytes or
    raising). Counts what really ran."""

    name: str = "fake"
    behaviour: Callable[[dict], Awaitable[bytes]] | None = None
    fail_start: BaseException | None = None  # raised before release is awaited
    # Cancel the calling task just before awaiting release: a cancellation
    # that arrives while the decision's append is in flight.
    cancel_before_release: bool = False
    ran: list[dict] = field(default_factory=list)
    released: int = 0
    running: int = 0
    max_running: int = 0

    async def run(self, command, stdin, timeout_s, tools_dir, *, sandbox=None, release=None,
                  sandbox_id=None) -> SandboxResult:
        self.last_id = sandbox_id
        if self.fail_start is not None:
            raise self.fail_start
        if self.cancel_before_release:
            asyncio.current_task().cancel()
        if release is not None:
            await release  # raises: killed unreleased, nothing ran
        self.released += 1
        args = json.loads(stdin)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            out = await self.behaviour(args) if self.behaviour else b'{"ok": true}'
        finally:
            self.running -= 1
        self.ran.append(args)
        return SandboxResult(sandbox_id=sandbox_id or "sbx_fake", exit_code=0, signal=None, stdout=out, stderr=b"",
                             timed_out=False, output_truncated=False, duration_s=0.001)

    def kill_all(self) -> None:
        pass

    def describe(self) -> str:
        return "fake"


class FaultyStore:
    """The real SQLite store, with chosen operations made to fail the way a
    broken database does (StoreError)."""

    def __init__(self, store: SqliteStateStore) -> None:
        self.store = store
        # "claim_call", "record_call", "list_calls", "create_approval", "create_task", "commit", "get_task"
        self.fail: set[str] = set()
        self.name = store.name

    def transaction(self):
        outer = self

        class Tx:
            async def __aenter__(self):
                self.inner = outer.store.transaction()
                self.tx = await self.inner.__aenter__()
                return self

            async def __aexit__(self, *exc):
                return await self.inner.__aexit__(*exc)

            def __getattr__(self, name):
                op = getattr(self.tx, name)
                if name not in outer.fail:
                    return op

                async def failing(*a, **kw):
                    raise StoreError(f"injected failure of {name}")
                return failing
        return Tx()

    async def get_task(self, task_id):
        if "get_task" in self.fail:
            raise StoreError("injected failure of get_task")
        return await self.store.get_task(task_id)

    async def get_approval(self, approval_id):
        return await self.store.get_approval(approval_id)

    async def list_approvals(self, **kw):
        return await self.store.list_approvals(**kw)

    async def approvals_with_status(self, statuses):
        return await self.store.approvals_with_status(statuses)

    async def list_calls(self, task_id, *, limit):
        if "list_calls" in self.fail:
            raise StoreError("injected failure of list_calls")
        return await self.store.list_calls(task_id, limit=limit)

    def close(self) -> None:
        self.store.close()

    def __getattr__(self, name):  # every other read goes to the real store, unfaulted
        return getattr(self.store, name)


class Harness:
    def __init__(self, tmp: Path, *, engine=None, sandbox: FakeSandbox | None = None,
                 rego_engine: bool = False, agents=None, registry=None, policy_config: PolicyConfig | None = None,
                 connectors=None) -> None:
        """agents, registry, policy_config and connectors replace the
        example configuration's (for policy tests through the pipeline)."""
        keys = tmp / "keys"
        generate_keypair(keys)
        self.audit_path = tmp / "audit.jsonl"
        self.audit = AuditLog(self.audit_path, load_signing_key(keys / "audit.key"))
        self.pubkey = keys / "audit.pub"
        self.db = SqliteStateStore(tmp / "state.db")
        self.store = FaultyStore(self.db)
        self.sandbox = sandbox or FakeSandbox()
        agents = agents if agents is not None else load_agents(EXAMPLES / "agents")
        registry = registry if registry is not None else load_registry(EXAMPLES / "tools.yaml")
        policy_config = policy_config or PolicyConfig(rego_dir=REPO / "rego")
        policy_set = build_policy_set(policy_config.rego_dir, agents, policy_config, registry, connectors)
        if rego_engine:
            from enforcer.policy.engine import create_engine
            engine = create_engine(policy_set, policy_config)
        self.engine = engine or FakeEngine()
        self.holder = PolicyHolder(ActivePolicy(self.engine, registry, policy_set, agents))
        self.metrics = Metrics(lambda: agents)
        self.pipeline = Pipeline(policy=self.holder, audit=self.audit, store=self.store, sandbox=self.sandbox,
                                 sandbox_config=SandboxConfig(), limits=LimitsConfig(), metrics=self.metrics)

    # -- driving -------------------------------------------------------------

    async def start(self, agent: str = AGENT, goal: str = "Pay vendor invoices: transfer funds", *,
                    actions: tuple[str, ...] = (), resources: tuple[str, ...] = ()) -> str:
        return (await self.pipeline.start_task(StartTaskRequest(agent, goal, actions,
                                                                declared_resources=resources))).task_id

    def call(self, task_id: str, tool: str = "read_invoice", args: dict | None = None, *, rpc: str = "Execute",
             agent: str = AGENT, **kw: Any) -> CallRequest:
        return CallRequest(rpc=rpc, task_id=task_id, agent_id=agent, tool=tool,
                           args=args if args is not None else {"invoice_id": "INV-1001"}, **kw)

    def break_audit(self) -> None:
        """A real write failure: the log's file descriptor goes away under the writer."""
        os.close(self.audit._fd)
        self.audit._fd = os.open("/dev/full", os.O_WRONLY)

    # -- reading ---------------------------------------------------------------

    def records(self) -> list:
        return [parse_record(json.loads(line)["record"]) for line in self.audit_path.read_bytes().splitlines()]

    def kinds(self) -> list[str]:
        return [r.KIND for r in self.records()]

    async def approvals(self) -> int:
        return self.db._read(lambda db: db.execute("SELECT COUNT(*) FROM approvals").fetchone()[0])

    async def task(self, task_id: str):
        return await self.db.get_task(task_id)

    async def calls(self, task_id: str):
        """The task's committed history, oldest first."""
        return await self.db.list_calls(task_id, limit=10_000)

    def close(self) -> None:
        self.audit.close()
        self.db.close()


__all__ = ["AGENT", "AeclError", "FakeEngine", "FakeSandbox", "Harness", "PolicyError", "SandboxError",
           "StoreError", "answer", "asyncio"]
