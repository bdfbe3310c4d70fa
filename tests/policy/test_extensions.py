"""Operator data and extensions, the README's worked example
(examples/policy-extension: verified vendors and a per-agent cap):
the data beside the Rego is what `opa test` sees and what every engine
enforces, and an extension's deny/escalate applies without editing main.rego."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from enforcer.config import OpaConfig, PolicyConfig
from enforcer.errors import ConfigError
from enforcer.manifests import load_agents, load_registry
from enforcer.policy.bundle import build_bundle
from enforcer.policy.engine import create_engine
from enforcer.policy.evaluate import evaluate_decision
from enforcer.policy.opa import OpaEngine, OpaProcess, find_opa_binary, free_port
from enforcer.policy.policyset import build_policy_set, load_data_files
from tests.conftest import EXAMPLES, REPO
from tests.policy.test_engines import policy_input

EXTENSION = EXAMPLES / "policy-extension" / "rego"
AGENTS = load_agents(EXAMPLES / "agents")
REGISTRY = load_registry(EXAMPLES / "tools.yaml")
VERIFIED = "V-17"
SEED_VENDOR = "V-221"  # the seed's transfer_funds(vendor="V-221", amount=100000): not verified


@pytest.fixture(scope="module")
def rego(tmp_path_factory):
    """The shipped policy with the worked example dropped in, as an operator would."""
    d = tmp_path_factory.mktemp("policy") / "rego"
    shutil.copytree(REPO / "rego", d)
    shutil.copytree(EXTENSION, d, dirs_exist_ok=True)
    return d


@pytest.fixture(scope="module")
def policy_set(rego):
    return build_policy_set(rego, AGENTS, PolicyConfig(rego_dir=rego), REGISTRY)


def transfer(vendor, amount, agent="finance_agent_v2"):
    return policy_input("transfer_funds", {"vendor": vendor, "amount": amount}, agent=agent)


CASES = [  # (input, outcome, rule)
    (transfer(VERIFIED, 1000), "escalate", "context_rules.requires_human_approval"),
    (transfer(SEED_VENDOR, 100000), "block", "extensions.vendors.deny"),
    (transfer(VERIFIED, 300000), "block", "extensions.vendors.deny"),
    (policy_input("read_invoice", {"invoice_id": "INV-1"}), "approve", "risk.within_threshold"),
]


def test_opa_test_passes_on_the_policy_with_the_extension(rego):
    opa = find_opa_binary()
    out = subprocess.run([opa, "test", "--ignore", "capabilities.json", str(rego)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_data_file_is_loaded_at_its_directorys_path(policy_set):
    assert policy_set.data["vendors"]["verified_vendors"][VERIFIED] == "Northwind Supplies"
    assert "config" in policy_set.data["aecl"]  # AECL's own data is still there


@pytest.mark.parametrize(("doc", "outcome", "rule"), CASES)
def test_the_embedded_engine_applies_the_extension(policy_set, doc, outcome, rule):
    d = evaluate_decision(create_engine(policy_set, PolicyConfig(rego_dir=REPO / "rego")), doc, decision_id="t")
    assert (d.outcome, d.rule) == (outcome, rule), d.reason


def test_a_bundle_served_by_real_opa_applies_the_extension(policy_set, tmp_path):
    bundle = build_bundle(policy_set, tmp_path / "aecl.tar.gz")
    proc = OpaProcess(find_opa_binary(), "127.0.0.1", free_port(), bundle)
    proc.start()
    try:
        engine = OpaEngine(policy_set, OpaConfig(port=proc.port, timeout_s=5, bundle=bundle))
        try:
            for doc, outcome, rule in CASES:
                d = evaluate_decision(engine, doc, decision_id="t")
                assert (d.outcome, d.rule) == (outcome, rule), d.reason
        finally:
            engine.close()
    finally:
        proc.stop()


def test_changing_the_data_changes_the_revision_and_names_it(rego, policy_set, tmp_path):
    other = tmp_path / "rego"
    shutil.copytree(rego, other)
    f = other / "vendors" / "data.json"
    doc = json.loads(f.read_text())
    doc["amount_caps"]["finance_agent_v2"] = 1
    f.write_text(json.dumps(doc))
    changed = build_policy_set(other, AGENTS, PolicyConfig(rego_dir=other), REGISTRY)
    assert changed.revision != policy_set.revision
    assert changed.changed_since(policy_set) == ["data"]


def test_a_registry_change_changes_the_revision_and_names_it(policy_set, rego):
    tools = dict(REGISTRY.tools)
    tools["transfer_funds"] = tools["transfer_funds"].model_copy(update={"affects_production": False})
    registry = REGISTRY.model_copy(update={"tools": tools})
    changed = build_policy_set(rego, AGENTS, PolicyConfig(rego_dir=rego), registry)
    assert changed.revision != policy_set.revision and changed.changed_since(policy_set) == ["registry"]


def test_data_files_merge_key_by_key_as_in_opa(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "data.json").write_text('{"a": {"y": 1}, "b": true}')
    (tmp_path / "a" / "data.yaml").write_text("x: 2\n")
    assert load_data_files(tmp_path) == {"a": {"x": 2, "y": 1}, "b": True}


def test_two_data_files_defining_the_same_key_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "data.json").write_text('{"a": {"x": 1}}')
    (tmp_path / "a" / "data.yaml").write_text("x: 2\n")
    with pytest.raises(ConfigError, match=r"data\.a\.x is also defined in"):
        load_data_files(tmp_path)


def test_data_under_aecls_own_config_is_refused(tmp_path):
    (tmp_path / "aecl").mkdir()
    (tmp_path / "aecl" / "data.json").write_text('{"config": {"agents": {}}}')
    with pytest.raises(ConfigError, match=r"data\.aecl\.config is AECL's own"):
        load_data_files(tmp_path)


def test_a_data_file_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "data.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON/YAML object"):
        load_data_files(tmp_path)


def test_push_mode_refuses_a_policy_with_data_files_instead_of_running_without_them(policy_set):
    with pytest.raises(ConfigError, match="need bundle mode"):
        OpaEngine(policy_set, OpaConfig(port=free_port(), timeout_s=1))
