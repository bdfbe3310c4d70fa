"""Policy on arguments and history, through the pipeline with the real
embedded engine (the shipped Rego): the task's history, cumulative rules on
it, declared resources and connector scopes. A registry, manifests and
history rules of the tests' own keep the cases apart from the example
configuration."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from enforcer.audit.records import DecisionRecord, RejectedRecord, TaskStarted
from enforcer.config import ConnectorConfig, HistoryConfig, PolicyConfig
from enforcer.errors import AuditUnavailable, StoreError
from enforcer.manifests import AgentManifest, ToolRegistry
from enforcer.pipeline.policy_input import MAX_HISTORY
from tests.conftest import REPO
from tests.pipeline.harness import AGENT, FakeEngine, Harness, answer

WRITE = ["/bin/true"]
# Tools that run here name no connector: the harness's pipeline has no
# connector gateway (enforcer.connectors), so such a tool could not run. The
# scope gate decides before that, on Decide as on Execute.
REGISTRY = ToolRegistry.model_validate({"tools": {
    "read_invoice": {"command": WRITE, "access": "read", "resource_arg": "invoice_id"},
    "update_record": {"command": WRITE, "access": "write", "resource_arg": "record_id"},
    "create_record": {"command": WRITE, "access": "write", "resource_arg": "record_id",
                      "connectors": ["records"]},
    "fire_webhook": {"command": WRITE, "access": "write", "resource_arg": "event_id"},
    "transfer_funds": {"command": WRITE, "access": "write", "irreversible": True, "affects_production": True,
                       "amount_arg": "amount", "connectors": ["payments"]},
    "deploy_config": {"command": WRITE, "access": "write", "resource_arg": "service", "connectors": ["config"]},
}})
AGENTS = {
    AGENT: AgentManifest.model_validate({
        "agent_id": AGENT,
        "allowed_actions": ["read_invoice", "update_record", "create_record", "fire_webhook", "deploy_config"],
        "context_rules": {"transfer_funds": "requires_human_approval"},
        "credential_scope": ["invoices:read", "records:write", "payments:initiate"],
        "max_tool_calls_per_run": 1000,
    }),
}


def connector(scope: str) -> ConnectorConfig:
    return ConnectorConfig.model_validate({"base_url": "http://127.0.0.1:9", "scope": scope,
                                           "allow": [{"methods": ["POST"], "path_prefix": "/"}]})


CONNECTORS = {"records": connector("records:write"), "payments": connector("payments:initiate"),
              "config": connector("config:deploy")}
HISTORY = HistoryConfig(amount_caps={"transfer_funds": 250000}, max_repeats={"fire_webhook": 3}, window_seconds=600)
WRITES = ("update_record", "create_record", "fire_webhook", "transfer_funds", "deploy_config")


def harness(tmp_path, **kw) -> Harness:
    kw.setdefault("rego_engine", True)
    return Harness(tmp_path, agents=AGENTS, registry=REGISTRY, connectors=CONNECTORS,
                   policy_config=PolicyConfig(rego_dir=REPO / "rego", history=HISTORY), **kw)


@pytest.fixture
def h(tmp_path):
    harness_ = harness(tmp_path)
    yield harness_
    harness_.close()


def run(coro):
    return asyncio.run(coro)


def fire(h: Harness, task: str, event: str = "evt-1", rpc: str = "Execute"):
    return h.call(task, "fire_webhook", {"event_id": event, "payload": {"n": 1}}, rpc=rpc)


def transfer(h: Harness, task: str, amount):
    return h.call(task, "transfer_funds", {"vendor": "V-221", "amount": amount})


def decisions(h: Harness) -> list[DecisionRecord]:
    return [r for r in h.records() if isinstance(r, DecisionRecord)]


# -- a bound on identical calls ------------------------------------------------------


def test_a_fourth_webhook_for_one_event_is_blocked_though_the_same_call_alone_passes(h):
    async def go():
        task = await h.start(actions=WRITES)
        for _ in range(3):
            assert (await h.pipeline.execute(fire(h, task))).status == "succeeded"
        fourth = await h.pipeline.execute(fire(h, task))
        assert fourth.status == "blocked"
        assert (fourth.decision.gate, fourth.decision.rule) == ("history", "history.max_repeats")
        assert fourth.error == ("fire_webhook on 'evt-1' already made 3 times in this task "
                                "(at most 3 within 600 seconds)")
        # A blocked call is no repeat, so the bound holds; another event is another resource.
        assert (await h.pipeline.execute(fire(h, task))).status == "blocked"
        assert (await h.pipeline.execute(fire(h, task, "evt-2"))).status == "succeeded"
        # The same call alone, in a task of its own, passes.
        other = await h.start(actions=WRITES)
        assert (await h.pipeline.execute(fire(h, other))).status == "succeeded"
        return task, other
    task, other = run(go())
    assert len(h.sandbox.ran) == 5
    calls = run(h.calls(task))
    assert [(c.seq, c.outcome, c.resource) for c in calls] == [
        (1, "approve", "evt-1"), (2, "approve", "evt-1"), (3, "approve", "evt-1"), (4, "block", "evt-1"),
        (5, "block", "evt-1"), (6, "approve", "evt-2")]
    assert [c.seq for c in run(h.calls(other))] == [1]
    fourth = decisions(h)[3].policy_input
    assert [e["resource"] for e in fourth["task"]["history"]] == ["evt-1"] * 3
    assert fourth["resource"] == "evt-1" and fourth["task"]["history_truncated"] is False
    assert set(fourth["task"]["history"][0]) == {"tool", "outcome", "amount", "resource", "at"}


def test_repeats_outside_the_window_do_not_count(h):
    now = [1_700_000_000.0]
    h.pipeline.clock = lambda: now[0]

    async def go():
        task = await h.start(actions=WRITES)
        for _ in range(3):
            assert (await h.pipeline.execute(fire(h, task))).status == "succeeded"
            now[0] += 100
        assert (await h.pipeline.execute(fire(h, task))).status == "blocked"
        now[0] += 300  # the first call is now 600 s old: out of the window
        assert (await h.pipeline.execute(fire(h, task))).status == "succeeded"
        assert (await h.pipeline.execute(fire(h, task))).status == "blocked"
        return task
    task = run(go())
    assert [c.at for c in run(h.calls(task))] == [1_700_000_000.0, 1_700_000_100.0, 1_700_000_200.0,
                                                   1_700_000_300.0, 1_700_000_600.0, 1_700_000_600.0]


def test_decide_adds_nothing_to_the_history_but_decides_on_it(h):
    async def go():
        task = await h.start(actions=WRITES)
        for _ in range(5):
            assert (await h.pipeline.decide(fire(h, task, rpc="Decide"))).decision.outcome == "approve"
        assert await h.calls(task) == []
        for _ in range(3):
            assert (await h.pipeline.execute(fire(h, task))).status == "succeeded"
        dry = await h.pipeline.decide(fire(h, task, rpc="Decide"))
        assert (dry.decision.outcome, dry.decision.rule) == ("block", "history.max_repeats")
        assert len(await h.calls(task)) == 3
    run(go())


# -- a per-task cumulative cap -------------------------------------------------------------


def test_a_transfer_over_the_cumulative_cap_is_blocked(h):
    async def go():
        task = await h.start(actions=WRITES)
        assert (await h.pipeline.execute(transfer(h, task, 100000))).status == "pending_approval"
        assert (await h.pipeline.execute(transfer(h, task, 100000))).status == "pending_approval"
        over = await h.pipeline.execute(transfer(h, task, 100000))
        assert over.status == "blocked"
        assert (over.decision.gate, over.decision.rule) == ("history", "history.amount_cap")
        assert over.error == ("transfer_funds amounts in this task would reach 300000, over the cap of 250000 "
                              "(200000 already approved or escalated)")
        # Up to the cap exactly still goes to a human; the block counted nothing.
        assert (await h.pipeline.execute(transfer(h, task, 50000))).status == "pending_approval"
        # The same transfer alone passes the gate (and escalates, as the manifest says).
        other = await h.start(actions=WRITES)
        assert (await h.pipeline.execute(transfer(h, other, 100000))).status == "pending_approval"
        return task
    task = run(go())
    assert [(c.outcome, c.amount) for c in run(h.calls(task))] == [
        ("escalate", 100000), ("escalate", 100000), ("block", 100000), ("escalate", 50000)]
    assert h.sandbox.ran == []


# -- declared resources ---------------------------------------------------------------------


def test_an_update_outside_the_declared_resources_is_blocked(h):
    update = {"fields": {"status": "paid"}}

    async def go():
        task = await h.start(actions=("update_record",), resources=("REC-1", "REC-3"))
        inside = await h.pipeline.execute(h.call(task, "update_record", {"record_id": "REC-1", **update}))
        assert inside.status == "succeeded"
        outside = await h.pipeline.execute(h.call(task, "update_record", {"record_id": "REC-2", **update}))
        assert outside.status == "blocked"
        assert (outside.decision.gate, outside.decision.rule) == ("intent", "intent.outside_declared_resources")
        assert outside.error == ("Action touches resource 'REC-2' outside the task's declared resources "
                                 '["REC-1", "REC-3"]')
        # Reads are not writes: any invoice may be read.
        assert (await h.pipeline.execute(h.call(task, "read_invoice", {"invoice_id": "INV-9"}))).status == \
            "succeeded"
        # A task that declared no resources is not checked.
        free = await h.start(actions=("update_record",))
        assert (await h.pipeline.execute(h.call(free, "update_record", {"record_id": "REC-2", **update}))).status \
            == "succeeded"
    run(go())
    assert [a["record_id"] for a in h.sandbox.ran if "record_id" in a] == ["REC-1", "REC-2"]
    started = [r for r in h.records() if isinstance(r, TaskStarted)]
    assert started[0].input_payload["declared_resources"] == ["REC-1", "REC-3"]
    assert started[1].input_payload["declared_resources"] == []
    blocked = decisions(h)[1].policy_input
    assert blocked["resource"] == "REC-2" and blocked["task"]["declared_resources"] == ["REC-1", "REC-3"]
    assert blocked["tool"]["resource_arg"] == "record_id"


def test_an_integer_resource_matches_its_declared_text(h):
    async def go():
        task = await h.start(actions=("update_record",), resources=("1002",))
        ok = await h.pipeline.execute(h.call(task, "update_record", {"record_id": 1002, "fields": {}}))
        assert ok.status == "succeeded"
        no = await h.pipeline.execute(h.call(task, "update_record", {"record_id": 1003, "fields": {}}))
        assert no.decision.rule == "intent.outside_declared_resources"
        return task
    task = run(go())
    assert [c.resource for c in run(h.calls(task))] == ["1002", "1003"]


# -- connector scopes ----------------------------------------------------------------------


def test_a_tool_whose_connector_scope_the_manifest_lacks_is_blocked_before_any_sandbox(h):
    async def go():
        task = await h.start(actions=WRITES)
        deploy = await h.pipeline.execute(h.call(task, "deploy_config", {"service": "billing", "config": {}}))
        assert deploy.status == "blocked"
        assert (deploy.decision.gate, deploy.decision.rule) == ("scope", "scope.missing_scope")
        assert deploy.error == ("tool 'deploy_config' uses connector 'config', which needs scope 'config:deploy': "
                                f"not in the credential_scope of agent '{AGENT}'")
        # A connector whose scope the manifest grants passes the gate.
        create = await h.pipeline.decide(h.call(task, "create_record", {"record_id": "REC-1", "fields": {}},
                                                rpc="Decide"))
        assert (create.decision.outcome, create.decision.gate) == ("approve", "risk")
        paying = await h.pipeline.execute(transfer(h, task, 100))
        assert paying.status == "pending_approval" and paying.decision.gate == "context_rules"
    run(go())
    assert h.sandbox.released == 0 and h.sandbox.ran == []
    first, create, paying = (d.policy_input for d in decisions(h))
    assert first["tool"]["connectors"] == ["config"] and create["tool"]["connectors"] == ["records"]
    assert paying["tool"]["connectors"] == ["payments"]


def test_the_connectors_scopes_are_policy_data_without_their_upstreams(h):
    data = h.holder.current.policy_set.config_data
    assert data["connectors"] == {"config": {"scope": "config:deploy"}, "payments": {"scope": "payments:initiate"},
                                  "records": {"scope": "records:write"}}
    assert data["history"] == {"amount_caps": {"transfer_funds": 250000}, "max_repeats": {"fire_webhook": 3},
                               "window_seconds": 600}


# -- the history row against the log ----------------------------------------------------------


def test_the_history_row_commits_only_after_the_decisions_append(h):
    async def go():
        task = await h.start(actions=WRITES)
        h.break_audit()
        with pytest.raises(AuditUnavailable):
            await h.pipeline.execute(fire(h, task))
        assert await h.calls(task) == []
        assert (await h.task(task)).calls_so_far == 0
    run(go())
    assert h.sandbox.ran == []


def test_a_store_failure_recording_the_call_runs_nothing_and_is_logged(h):
    async def go():
        task = await h.start(actions=WRITES)
        h.store.fail = {"record_call"}
        with pytest.raises(StoreError):
            await h.pipeline.execute(fire(h, task))
        h.store.fail = set()
        assert await h.calls(task) == [] and (await h.task(task)).calls_so_far == 0
    run(go())
    assert h.sandbox.ran == [] and h.sandbox.released == 0
    last = h.records()[-1]
    assert isinstance(last, RejectedRecord) and "injected failure of record_call" in last.reason
    assert last.decision_id  # names the decision that was reached


def test_a_store_failure_reading_the_history_refuses_a_decide(h):
    async def go():
        task = await h.start(actions=WRITES)
        h.store.fail = {"list_calls"}
        with pytest.raises(StoreError):
            await h.pipeline.decide(fire(h, task, rpc="Decide"))
    run(go())
    assert isinstance(h.records()[-1], RejectedRecord)


def test_a_rule_tool_is_blocked_when_the_history_is_longer_than_the_input_carries(h):
    async def go():
        task = await h.start(actions=WRITES)
        async with h.db.transaction() as tx:
            for i in range(MAX_HISTORY + 1):
                await tx.record_call(task, at=float(i), tool="read_invoice", outcome="approve", amount=None,
                                     resource=f"INV-{i}")
            await tx.commit()
        blocked = await h.pipeline.execute(fire(h, task))
        assert blocked.decision.rule == "history.history_truncated"
        # A tool no history rule names is decided as before.
        assert (await h.pipeline.execute(h.call(task, "read_invoice", {"invoice_id": "INV-1"}))).status == \
            "succeeded"
    run(go())
    doc = decisions(h)[0].policy_input
    assert len(doc["task"]["history"]) == MAX_HISTORY and doc["task"]["history_truncated"] is True
    assert doc["task"]["history"][0]["resource"] == "INV-1"  # the oldest left out


# -- what each call leaves in the history (a fake engine decides) -------------------------------


def test_every_outcome_joins_the_history_with_its_amount_and_resource(tmp_path):
    outcomes = iter(["approve", "escalate", "block", "approve"])
    h = harness(tmp_path, rego_engine=False, engine=FakeEngine(lambda _i: answer(next(outcomes))))
    try:
        now = [1_700_000_000.0]
        h.pipeline.clock = lambda: now[0]

        async def go():
            task = await h.start(actions=WRITES)
            await h.pipeline.execute(fire(h, task))
            now[0] += 1
            await h.pipeline.execute(transfer(h, task, 2.5))
            now[0] += 1
            await h.pipeline.execute(transfer(h, task, "lots"))  # not a number: no amount
            now[0] += 1
            await h.pipeline.execute(h.call(task, "update_record", {"fields": {}}))  # no resource sent
            return task
        task = run(go())
        calls = run(h.calls(task))
        assert [(c.tool, c.outcome, c.amount, c.resource, c.at) for c in calls] == [
            ("fire_webhook", "approve", None, "evt-1", 1_700_000_000.0),
            ("transfer_funds", "escalate", 2.5, None, 1_700_000_001.0),
            ("transfer_funds", "block", None, None, 1_700_000_002.0),
            ("update_record", "approve", None, None, 1_700_000_003.0),
        ]
        last = h.engine.inputs[-1]
        assert last["task"]["history"] == [
            {"tool": "fire_webhook", "outcome": "approve", "amount": None, "resource": "evt-1",
             "at": 1_700_000_000.0},
            {"tool": "transfer_funds", "outcome": "escalate", "amount": 2.5, "resource": None,
             "at": 1_700_000_001.0},
            {"tool": "transfer_funds", "outcome": "block", "amount": None, "resource": None, "at": 1_700_000_002.0},
        ]
        assert last["resource"] is None and h.engine.inputs[0]["task"]["history"] == []
    finally:
        h.close()


def test_shadow_mode_keeps_the_policys_outcome_in_the_history(tmp_path):
    h = harness(tmp_path, rego_engine=False, engine=FakeEngine(lambda _i: answer("block")))
    try:
        h.holder.swap(replace(h.holder.current, shadow_all=True))

        async def go():
            task = await h.start(actions=WRITES)
            assert (await h.pipeline.execute(fire(h, task))).status == "succeeded"  # shadowed: it ran
            return task
        task = run(go())
        assert [c.outcome for c in run(h.calls(task))] == ["block"]
    finally:
        h.close()


def test_the_input_carries_at_most_the_last_200_calls(tmp_path):
    h = harness(tmp_path, rego_engine=False, engine=FakeEngine(lambda _i: answer("block")))
    try:
        async def go():
            task = await h.start(actions=WRITES)
            for _ in range(MAX_HISTORY + 2):
                await h.pipeline.execute(h.call(task, "read_invoice", {"invoice_id": "INV-1"}))
        run(go())
        inputs = h.engine.inputs
        assert [len(i["task"]["history"]) for i in inputs[MAX_HISTORY - 1:]] == [MAX_HISTORY - 1, MAX_HISTORY,
                                                                                 MAX_HISTORY]
        assert [i["task"]["history_truncated"] for i in inputs[MAX_HISTORY - 1:]] == [False, False, True]
    finally:
        h.close()
