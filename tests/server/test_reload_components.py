"""Every change that can alter a decision changes the revision and is a
policy_reload entry naming what changed: the tool registry, manifests,
operator data, Rego."""

from __future__ import annotations

import json

import yaml

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from tests.server.test_acceptance import decide, start
from tests.server.test_reload import admin, reload_entries, serve, workspace  # noqa: F401 - fixture

TRANSFER = {"vendor": "V-221", "amount": 100}


def test_a_registry_change_is_a_new_revision_and_a_reload_entry_naming_it(workspace):  # noqa: F811
    svc = serve(workspace)
    try:
        task = start(svc)
        before = decide(svc, task, "transfer_funds", TRANSFER)
        assert "affects_production" in before.risk_flags
        path = workspace / "examples/tools.yaml"
        registry = yaml.safe_load(path.read_text())
        del registry["tools"]["transfer_funds"]["affects_production"]
        path.write_text(yaml.safe_dump(registry))
        r = admin(svc).ReloadPolicy(pb.ReloadPolicyRequest())
        assert r.applied and r.new_revision != before.policy_revision
        assert "changed: registry" in r.message
        after = decide(svc, task, "transfer_funds", TRANSFER)
        assert "affects_production" not in after.risk_flags and after.risk_score < before.risk_score
        assert after.policy_revision == r.new_revision
        [entry] = reload_entries(svc)
        assert entry["outcome"] == "applied" and entry["changed"] == ["registry"]
    finally:
        svc.stop()


def test_operator_data_beside_the_rego_is_enforced_and_its_change_is_named(workspace):  # noqa: F811
    (workspace / "rego/aecl/extensions").mkdir(parents=True)
    (workspace / "rego/aecl/extensions/blocklist.rego").write_text(
        "package aecl.extensions.blocklist\n\nimport rego.v1\n\n"
        "deny contains \"this invoice is on the operator's blocklist\" if {\n"
        "\tinput.action.args.invoice_id in data.blocklist.invoices\n}\n")
    (workspace / "rego/blocklist").mkdir()
    data = workspace / "rego/blocklist/data.json"
    data.write_text(json.dumps({"invoices": ["INV-1"]}))
    svc = serve(workspace)
    try:
        task = start(svc, goal="read invoices")
        assert decide(svc, task, "read_invoice", {"invoice_id": "INV-2"}).outcome == pb.OUTCOME_APPROVE
        blocked = decide(svc, task, "read_invoice", {"invoice_id": "INV-1"})
        assert blocked.outcome == pb.OUTCOME_BLOCK and blocked.rule == "extensions.blocklist.deny"
        data.write_text(json.dumps({"invoices": ["INV-1", "INV-2"]}))
        r = admin(svc).ReloadPolicy(pb.ReloadPolicyRequest())
        assert r.applied and "changed: data" in r.message
        assert decide(svc, task, "read_invoice", {"invoice_id": "INV-2"}).outcome == pb.OUTCOME_BLOCK
        [entry] = reload_entries(svc)
        assert entry["changed"] == ["data"]
    finally:
        svc.stop()
