"""Loading a policy set: what may not be in it, and what its revision covers."""

from __future__ import annotations

import shutil

import pytest

from enforcer.config import PolicyConfig
from enforcer.errors import ConfigError
from enforcer.manifests import load_agents
from enforcer.policy.policyset import build_policy_set, check_builtins
from tests.conftest import EXAMPLES, REPO

AGENTS = load_agents(EXAMPLES / "agents")


@pytest.mark.parametrize("call", ['http.send({"method": "GET", "url": "http://x"})',
                                  'net.lookup_ip_addr("example.com")', "opa.runtime()"])
def test_network_builtins_are_refused_with_file_and_line(tmp_path, call):
    rego = tmp_path / "rego"
    shutil.copytree(REPO / "rego", rego)
    (rego / "aecl" / "leak.rego").write_text(f"package aecl.leak\n\nimport rego.v1\n\nx := {call}\n")
    with pytest.raises(ConfigError, match=r"leak\.rego:5: built-in '"):
        build_policy_set(rego, AGENTS, PolicyConfig(rego_dir=rego))


def test_mentions_in_strings_and_comments_are_not_calls():
    check_builtins("ok.rego", 'package a\n\n# never call http.send(...) here\nx := "http.send(" \ny := `opa.runtime()`\n')


def test_revision_changes_with_any_threshold(tmp_path):
    base = build_policy_set(REPO / "rego", AGENTS, PolicyConfig(rego_dir=REPO / "rego"))
    again = build_policy_set(REPO / "rego", AGENTS, PolicyConfig(rego_dir=REPO / "rego"))
    changed = build_policy_set(REPO / "rego", AGENTS,
                               PolicyConfig(rego_dir=REPO / "rego", hitl={"risk_floor": 0.8}))
    assert base.revision == again.revision != changed.revision
    assert changed.config_data["hitl"]["risk_floor"] == 0.8
