"""History rules and connector scopes as policy data: compiled into
data.aecl.config, covered by the revision (each its own component),
reloadable (history) or fixed until a restart (connectors), checked against
the registry at load, and decided alike by both engines."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from enforcer.config import ConnectorConfig, HistoryConfig, OpaConfig, PolicyConfig, load_config
from enforcer.errors import ConfigError
from enforcer.manifests import AgentManifest, ToolSpec
from enforcer.pipeline.policy_input import build_policy_input
from enforcer.pipeline.request import CallRequest
from enforcer.policy.decision import parse_decision
from enforcer.policy.holder import RELOADABLE, PolicyHolder
from enforcer.policy.opa import OpaEngine, OpaProcess, free_port
from enforcer.policy.policyset import build_policy_set, compile_data
from enforcer.policy.reload import PolicyReloader, compile_active, load_policy_set
from enforcer.policy.wasm import WasmEngine
from enforcer.state.store import Call, Task
from tests.conftest import REPO, write_config
from tests.policy.opa_helpers import opa_binary

POLICY = PolicyConfig(rego_dir=REPO / "rego")
HISTORY = HistoryConfig(amount_caps={"transfer_funds": 250000}, max_repeats={"fire_webhook": 3})


def connector(scope: str, **kw) -> ConnectorConfig:
    return ConnectorConfig.model_validate({"base_url": "http://127.0.0.1:9/api", "scope": scope,
                                           "allow": [{"methods": ["POST"], "path_prefix": "/transfers"}], **kw})


# -- compiled data and the revision ---------------------------------------------------------


def test_history_and_connector_scopes_are_compiled_without_the_connectors_upstream():
    payments = connector("payments:initiate", credential={"env": "PAYMENTS_API_KEY"})
    data = compile_data({}, PolicyConfig(rego_dir=REPO / "rego", history=HISTORY), {"payments": payments})
    config = data["aecl"]["config"]
    assert config["history"] == {"amount_caps": {"transfer_funds": 250000}, "max_repeats": {"fire_webhook": 3},
                                 "window_seconds": 3600}
    assert config["connectors"] == {"payments": {"scope": "payments:initiate"}}
    assert "PAYMENTS_API_KEY" not in repr(data) and "127.0.0.1" not in repr(data)
    empty = compile_data({}, POLICY)["aecl"]["config"]
    assert empty["history"] == {"amount_caps": {}, "max_repeats": {}, "window_seconds": 3600}
    assert empty["connectors"] == {}


def test_history_rules_and_connector_scopes_each_change_the_revision_as_their_own_component():
    base = build_policy_set(REPO / "rego", {}, POLICY)
    capped = build_policy_set(REPO / "rego", {}, PolicyConfig(rego_dir=REPO / "rego", history=HISTORY))
    scoped = build_policy_set(REPO / "rego", {}, POLICY, None, {"payments": connector("payments:initiate")})
    rescoped = build_policy_set(REPO / "rego", {}, POLICY, None, {"payments": connector("payments:admin")})
    assert len({base.revision, capped.revision, scoped.revision, rescoped.revision}) == 4
    assert capped.changed_since(base) == ["history"]
    assert scoped.changed_since(base) == ["connectors"]
    assert rescoped.changed_since(scoped) == ["connectors"]
    # Only the scope is policy: another upstream or timeout is not a new revision.
    moved = build_policy_set(REPO / "rego", {}, POLICY, None,
                             {"payments": connector("payments:initiate", timeout_s=3.0)})
    assert moved.revision == scoped.revision


# -- the configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"amount_caps": {"transfer_funds": True}},
    {"amount_caps": {"transfer_funds": "250000"}},
    {"amount_caps": {"transfer_funds": -1}},
    {"max_repeats": {"fire_webhook": 0}},
    {"max_repeats": {"fire_webhook": 2.0}},
    {"window_seconds": 0},
    {"window_seconds": "3600"},
    {"max_repeat": {"fire_webhook": 3}},
])
def test_history_settings_are_strict(tmp_path, bad):
    path = write_config(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["policy"]["history"] = bad
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="policy.history"):
        load_config(path)


def test_history_settings_load_from_the_config_and_are_reloadable(tmp_path):
    path = write_config(tmp_path, policy={"engine": "embedded", "rego_dir": str(REPO / "rego"),
                                          "history": {"amount_caps": {"transfer_funds": 250000},
                                                      "max_repeats": {"fire_webhook": 3},
                                                      "window_seconds": 60}})
    assert load_config(path).policy.history == HistoryConfig(amount_caps={"transfer_funds": 250000},
                                                             max_repeats={"fire_webhook": 3}, window_seconds=60)
    assert "policy.history" in RELOADABLE


# -- connectors named by the registry ------------------------------------------------------------


def registry_with(tmp_path, connectors) -> str:
    """A registry of its own (the example one names the demo's connectors)."""
    doc = {"tools": {
        "read_invoice": {"command": ["/bin/true"], "access": "read"},
        "transfer_funds": {"command": ["/bin/true"], "access": "write", "amount_arg": "amount",
                           "connectors": connectors},
    }}
    path = tmp_path / "registry" / "tools.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return str(path)


CONNECTORS = {"payments": {"base_url": "http://127.0.0.1:9", "scope": "payments:initiate",
                           "allow": [{"methods": ["POST"], "path_prefix": "/transfers"}]}}


def test_a_tool_naming_a_connector_the_config_lacks_is_refused_naming_the_tool(tmp_path):
    path = write_config(tmp_path, tool_registry=registry_with(tmp_path, ["payments", "ledger"]),
                        connectors=CONNECTORS)
    with pytest.raises(ConfigError, match=r"tools\.transfer_funds\.connectors: no connector named 'ledger'"):
        load_policy_set(load_config(path))


def test_a_tool_naming_configured_connectors_loads_and_the_policy_sees_their_scopes(tmp_path):
    path = write_config(tmp_path, tool_registry=registry_with(tmp_path, ["payments"]), connectors=CONNECTORS)
    config = load_config(path)
    loaded = load_policy_set(config)
    assert loaded.registry.tools["transfer_funds"].connectors == ["payments"]
    scopes = loaded.policy_set.config_data["connectors"]
    assert scopes["payments"] == {"scope": "payments:initiate"}
    assert scopes == {name: {"scope": c.scope} for name, c in config.connectors.items()}


def test_a_reload_keeps_the_running_connectors_and_applies_new_history_rules(tmp_path):
    path = write_config(tmp_path, tool_registry=registry_with(tmp_path, ["payments"]), connectors=CONNECTORS)
    config = load_config(path)
    holder = PolicyHolder(compile_active(config))
    recorded = []

    async def record(result):
        recorded.append(result)
    reloader = PolicyReloader(holder, config, lambda: load_config(path), record, run_tests=False)
    try:
        # A new scope for the running connector, and new history rules.
        changed = yaml.safe_load(path.read_text())
        changed["connectors"]["payments"]["scope"] = "payments:admin"
        changed["policy"]["history"] = {"max_repeats": {"fire_webhook": 2}}
        path.write_text(yaml.safe_dump(changed))
        result = asyncio.run(reloader.reload("test"))
        assert result.applied and "history" in result.changed and "connectors" not in result.changed
        assert "not applied until a restart: connectors" in result.message
        data = holder.current.policy_set.config_data
        assert data["connectors"]["payments"] == {"scope": "payments:initiate"}
        assert data["history"]["max_repeats"] == {"fire_webhook": 2}
        # A registry naming a connector only the new config has is refused: it is not running.
        changed["connectors"]["ledger"] = changed["connectors"]["payments"]
        path.write_text(yaml.safe_dump(changed))
        registry = yaml.safe_load(config.tool_registry.read_text())
        registry["tools"]["transfer_funds"]["connectors"] = ["ledger"]
        config.tool_registry.write_text(yaml.safe_dump(registry))
        refused = asyncio.run(reloader.reload("test"))
        assert not refused.applied and "no connector named 'ledger'" in refused.message
    finally:
        reloader.close()
        holder.current.engine.close()


# -- both engines decide alike ---------------------------------------------------------------------

TOOLS = {
    "fire_webhook": ToolSpec(command=["/bin/true"], access="write", resource_arg="event_id"),
    "transfer_funds": ToolSpec(command=["/bin/true"], access="write", irreversible=True, affects_production=True,
                               amount_arg="amount", connectors=["payments"]),
    "update_record": ToolSpec(command=["/bin/true"], access="write", resource_arg="record_id",
                              connectors=["records"]),
}
AGENTS = {
    "payer": AgentManifest(agent_id="payer", allowed_actions=["fire_webhook", "transfer_funds", "update_record"],
                           credential_scope=["payments:initiate", "records:write"]),
    "clerk": AgentManifest(agent_id="clerk", allowed_actions=["update_record"], credential_scope=["invoices:read"]),
}


def doc(tool, args, *, history=(), resources=(), agent="payer", now=10_000.0):
    req = CallRequest(rpc="Execute", task_id="tsk_1", agent_id=agent, tool=tool, args=args)
    task = Task("tsk_1", agent, "", tuple(TOOLS), 9_000.0, 20_000.0, len(history), tuple(resources))
    calls = [Call("tsk_1", i + 1, 9_000.0 + i, t, o, a, r) for i, (t, o, a, r) in enumerate(history)]
    return build_policy_input(req, TOOLS[tool], task, now, calls)


HOOKS = [("fire_webhook", "approve", None, "evt-1")] * 3
PAID = [("transfer_funds", "escalate", 100000, None), ("transfer_funds", "approve", 100000, None)]
TABLE = [
    ("third_webhook_passes", doc("fire_webhook", {"event_id": "evt-1"}, history=HOOKS[:2]), "approve", "risk",
     "all gates passed"),
    ("fourth_webhook_blocks", doc("fire_webhook", {"event_id": "evt-1"}, history=HOOKS), "block", "history",
     "fire_webhook on 'evt-1' already made 3 times in this task (at most 3 within 3600 seconds)"),
    ("other_event_passes", doc("fire_webhook", {"event_id": "evt-2"}, history=HOOKS), "approve", "risk", ""),
    ("transfer_under_cap_escalates", doc("transfer_funds", {"amount": 50000}, history=PAID), "escalate", "hitl",
     ""),
    ("transfer_over_cap_blocks", doc("transfer_funds", {"amount": 50001}, history=PAID), "block", "history",
     ("transfer_funds amounts in this task would reach 250001, over the cap of 250000 (200000 already approved "
      "or escalated)")),
    ("fractional_amounts_over_cap_block", doc("transfer_funds", {"amount": 0.5},
                                              history=[("transfer_funds", "approve", 249999.75, None)]),
     "block", "history", "over the cap of 250000"),
    ("update_outside_declared_resources_blocks",
     doc("update_record", {"record_id": "INV-1002"}, resources=("INV-1001", "INV-1003")), "block", "intent",
     "Action touches resource 'INV-1002' outside the task's declared resources [\"INV-1001\", \"INV-1003\"]"),
    ("update_naming_no_resource_blocks", doc("update_record", {}, resources=("INV-1001",)), "block", "intent",
     "Action names no resource (argument 'record_id')"),
    ("update_inside_declared_resources_passes",
     doc("update_record", {"record_id": "INV-1001"}, resources=("INV-1001",)), "approve", "risk", ""),
    ("connector_scope_missing_blocks", doc("update_record", {"record_id": "INV-1001"}, agent="clerk"), "block",
     "scope", ("tool 'update_record' uses connector 'records', which needs scope 'records:write': not in the "
               "credential_scope of agent 'clerk'")),
]


@pytest.fixture(scope="module")
def engines():
    connectors = {"payments": connector("payments:initiate"), "records": connector("records:write")}
    policy_set = build_policy_set(REPO / "rego", AGENTS, PolicyConfig(rego_dir=REPO / "rego", history=HISTORY),
                                  None, connectors)
    proc = OpaProcess(opa_binary(), "127.0.0.1", free_port())
    proc.start()
    embedded = WasmEngine(policy_set)
    opa = OpaEngine(policy_set, OpaConfig(port=proc.port, timeout_s=5))
    yield embedded, opa
    opa.close()
    proc.stop()


@pytest.mark.parametrize(("case", "policy_input", "outcome", "gate", "words"), TABLE, ids=[t[0] for t in TABLE])
def test_engines_agree_on_history_resources_and_scopes(engines, case, policy_input, outcome, gate, words):
    embedded, opa = engines
    a, b = embedded.evaluate(policy_input), opa.evaluate(policy_input)
    assert a == b, f"{case}: embedded {a} != opa {b}"
    d = parse_decision(a, revision="r", decision_id="d")
    assert (d.outcome, d.gate) == (outcome, gate), d
    assert words in d.reason
