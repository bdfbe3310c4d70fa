"""Operator files: errors name the file and the field; nothing half-loads."""

from __future__ import annotations

import pytest

from enforcer.config import load_config
from enforcer.errors import ConfigError
from enforcer.manifests import load_agents, load_registry
from tests.conftest import EXAMPLES, REPO


def test_example_configuration_loads():
    config = load_config(EXAMPLES / "aecl.yaml")
    agents = load_agents(config.agents_dir)
    registry = load_registry(config.tool_registry)
    assert agents["finance_agent_v2"].max_tool_calls_per_run == 50
    assert "transfer_funds" in agents["finance_agent_v2"].context_rules
    assert "transfer_funds" not in agents["finance_agent_v2"].blocked_actions
    transfer = registry.tools["transfer_funds"]
    assert transfer.compensating_action == "reverse_transfer" and not transfer.irreversible
    assert transfer.amount_arg == "amount"
    # Every write tool declares how it is undone (aecl tools check).
    assert all(t.compensation or t.irreversible or t.nothing_to_undo for t in registry.tools.values()
               if t.access == "write")
    assert config.policy.rego_dir == (REPO / "rego").resolve()


def test_manifest_with_wrong_type_names_file_and_field(tmp_path):
    (tmp_path / "a.yaml").write_text("agent_id: a\nmax_tool_calls_per_run: 'fifty'\n")
    with pytest.raises(ConfigError) as err:
        load_agents(tmp_path)
    assert "a.yaml" in str(err.value) and "max_tool_calls_per_run" in str(err.value)


def test_manifest_with_unknown_field_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("agent_id: a\nis_trusted: true\n")
    with pytest.raises(ConfigError, match="is_trusted"):
        load_agents(tmp_path)


def test_duplicate_agent_ids_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("agent_id: a\n")
    (tmp_path / "b.json").write_text('{"agent_id": "a"}')
    with pytest.raises(ConfigError, match="already defined"):
        load_agents(tmp_path)


def test_registry_requires_access_kind(tmp_path):
    (tmp_path / "t.yaml").write_text("tools:\n  x:\n    command: [/bin/true]\n")
    with pytest.raises(ConfigError) as err:
        load_registry(tmp_path / "t.yaml")
    assert "tools.x.access" in str(err.value)


def test_config_refuses_unknown_keys(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "agents_dir: a\ntool_registry: t\npolicy: {rego_dir: r, engine: magic}\n"
        "audit: {path: l, signing_key: k}\nstate: {sqlite_path: s}\n"
    )
    with pytest.raises(ConfigError, match="policy.engine"):
        load_config(tmp_path / "c.yaml")


def test_unknown_risk_flag_weight_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "agents_dir: a\ntool_registry: t\npolicy: {rego_dir: r, risk: {weights: {vibes: 0.1}}}\n"
        "audit: {path: l, signing_key: k}\nstate: {sqlite_path: s}\n"
    )
    with pytest.raises(ConfigError, match="unknown risk flags"):
        load_config(tmp_path / "c.yaml")


def test_a_tools_dir_holding_the_service_secrets_is_refused_at_load(tmp_path):
    """tools_dir is bound into every sandbox: one that contains the audit
    signing key (or the log, or the state) would hand it to every tool."""
    from enforcer.policy.reload import load_policy_set
    from tests.conftest import write_config

    registry = tmp_path / "tools.yaml"
    registry.write_text((EXAMPLES / "tools.yaml").read_text().replace("tools_dir: tools", "tools_dir: ."))
    config = load_config(write_config(tmp_path, tool_registry=str(registry)))  # keys under tmp_path/keys
    with pytest.raises(ConfigError, match="would expose .*audit.key"):
        load_policy_set(config)


def test_a_tools_dir_apart_from_the_secrets_loads(tmp_path):
    from enforcer.config import load_config
    from enforcer.policy.reload import load_policy_set
    from tests.conftest import write_config

    assert load_policy_set(load_config(write_config(tmp_path))).registry.tools_dir is not None


CONTROL = [chr(c) for c in range(0x20)] + ["\x7f"]


def test_name_pattern_is_anchored_at_the_true_end():
    from enforcer.manifests import NAME_RE

    assert NAME_RE.fullmatch("read_invoice")
    assert not NAME_RE.match("read_invoice\n")  # Python's `$` would match before it


@pytest.mark.parametrize("field", ["agent_id", "allowed_actions", "blocked_actions"])
def test_manifest_names_with_control_characters_are_refused(field):
    """pydantic's `pattern=` runs Rust regex, where `$` is the end of the text
    (no multi-line mode): a name with a trailing newline does not match."""
    from pydantic import ValidationError

    from enforcer.manifests import AgentManifest

    for c in CONTROL:
        for bad in (f"{c}agent", f"ag{c}ent", f"agent{c}"):
            value = bad if field == "agent_id" else [bad]
            with pytest.raises(ValidationError) as err:
                AgentManifest(**{"agent_id": "a", field: value})
            assert err.value.errors()[0]["loc"][0] == field, repr(bad)


def test_registry_tool_names_with_control_characters_are_refused():
    from pydantic import ValidationError

    from enforcer.manifests import ToolRegistry

    for c in CONTROL:
        for bad in (f"{c}tool", f"to{c}ol", f"tool{c}"):
            with pytest.raises(ValidationError):
                ToolRegistry(tools={bad: {"command": ["/bin/true"], "access": "read"}})
            with pytest.raises(ValidationError):
                ToolRegistry(tools={"t": {"command": ["/bin/true"], "access": "read", "amount_arg": bad}})


def test_registry_declares_path_arguments(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "tools:\n  save:\n    command: [/bin/true]\n    access: write\n    path_args: [path, dest]\n")
    assert load_registry(tmp_path / "t.yaml").tools["save"].path_args == ["path", "dest"]
    assert load_registry(EXAMPLES / "tools.yaml").tools["read_invoice"].path_args == []


@pytest.mark.parametrize(("value", "words"), [
    ("path", "tools.save.path_args"),  # a list, not a string (strict)
    ("[../x]", "tools.save.path_args"),
    ("[path, path]", "more than once"),
    ("[amount]", "both an amount and a path"),
])
def test_registry_refuses_a_malformed_path_args(tmp_path, value, words):
    (tmp_path / "t.yaml").write_text(
        "tools:\n  save:\n    command: [/bin/true]\n    access: write\n    amount_arg: amount\n"
        f"    path_args: {value}\n")
    with pytest.raises(ConfigError, match=words):
        load_registry(tmp_path / "t.yaml")


def test_registry_declares_a_tools_resource_argument_and_connectors(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "tools:\n  update_record:\n    command: [/bin/true]\n    access: write\n"
        "    resource_arg: record_id\n    connectors: [records]\n"
        "  read_invoice:\n    command: [/bin/true]\n    access: read\n")
    registry = load_registry(tmp_path / "t.yaml")
    assert registry.tools["update_record"].resource_arg == "record_id"
    assert registry.tools["update_record"].connectors == ["records"]
    assert registry.tools["read_invoice"].resource_arg is None and registry.tools["read_invoice"].connectors == []


@pytest.mark.parametrize(("field", "value"), [("resource_arg", "'record id'"), ("connectors", "['rec\\n']"),
                                              ("connectors", "records")])
def test_registry_refuses_a_malformed_resource_argument_or_connector(tmp_path, field, value):
    (tmp_path / "t.yaml").write_text(f"tools:\n  x:\n    command: [/bin/true]\n    access: write\n"
                                     f"    {field}: {value}\n")
    with pytest.raises(ConfigError, match=f"tools.x.{field}"):
        load_registry(tmp_path / "t.yaml")
