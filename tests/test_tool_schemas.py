"""The registry's `args_schema`: each tool's JSON Schema (Draft 2020-12),
checked strictly at load, then every call's args validated against it before
the policy, with an error naming the JSON path of the bad field."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml

from enforcer.config import LimitsConfig, PolicyConfig
from enforcer.errors import ConfigError, InvalidRequest
from enforcer.manifests import ToolRegistry, ToolSpec, load_registry
from enforcer.pipeline.request import CallRequest
from enforcer.pipeline.validate import validate_args_schema, validate_call
from enforcer.policy.policyset import build_policy_set
from tests.conftest import EXAMPLES, REPO

REGISTRY = load_registry(EXAMPLES / "tools.yaml")


def spec(schema: dict) -> ToolSpec:
    return ToolSpec(command=["/bin/true"], access="write", args_schema=schema)


def refusal(args: dict, schema: dict | ToolSpec) -> InvalidRequest:
    tool = schema if isinstance(schema, ToolSpec) else spec(schema)
    with pytest.raises(InvalidRequest) as err:
        validate_args_schema(args, tool)
    return err.value


def test_every_example_tool_declares_its_args_schema():
    # An MCP tool's schema is its upstream server's inputSchema (enforcer.mcp), unless the registry overrides it.
    assert REGISTRY.tools and all(t.args_schema is not None for t in REGISTRY.tools.values() if t.mcp is None)
    assert any(t.mcp is not None for t in REGISTRY.tools.values())


@pytest.mark.parametrize("tool,args", [
    # What the demo and the example tools (examples/tools/*.py) send and read.
    ("read_invoice", {"invoice_id": "INV-1001"}),
    ("read_vendor_profile", {"vendor_id": "V-17"}),
    ("generate_payment_report", {"vendor_id": "V-17"}),
    ("transfer_funds", {"vendor": "V-221", "amount": 100000}),  # the seed's call
    ("transfer_funds", {"vendor": "V-305", "amount": 1, "currency": "USD", "reference": "INV-1001"}),
    ("transfer_funds", {"vendor": "V-12345678", "amount": 10**12, "currency": "EUR", "reference": "r" * 140}),
    ("delete_record", {"record_id": "INV-1002"}),
    ("modify_iam_policy", {"principal": "svc-reports", "grant": ["reports:read"]}),
    ("modify_iam_policy", {"principal": "svc-reports"}),
    ("bulk_export", {"table": "vendors"}),
])
def test_the_example_schemas_accept_what_the_tools_read(tool, args):
    validate_args_schema(args, REGISTRY.tools[tool])


@pytest.mark.parametrize("tool,args,message", [
    # The issue: read_invoice without invoice_id was approved, ran and failed.
    ("read_invoice", {}, "call.args.invoice_id: is required"),
    ("read_invoice", {"invoice_id": 1001}, "call.args.invoice_id: must be a string, not a number"),
    ("read_invoice", {"invoice_id": ""}, "call.args.invoice_id: must have at least 1 character"),
    ("transfer_funds", {"vendor": "V-221"}, "call.args.amount: is required"),
    ("transfer_funds", {"amount": 100000}, "call.args.vendor: is required"),
    ("transfer_funds", {"vendor": "V-221", "amount": "lots"}, "call.args.amount: must be an integer, not a string"),
    ("transfer_funds", {"vendor": "V-221", "amount": True}, "call.args.amount: must be an integer, not a boolean"),
    # Minor units: a fractional amount is not one.
    ("transfer_funds", {"vendor": "V-221", "amount": 1250.5}, "call.args.amount: must be an integer, not a number"),
    ("transfer_funds", {"vendor": "V-221", "amount": 0}, "call.args.amount: must be >= 1"),
    ("transfer_funds", {"vendor": "V-221", "amount": 10**12 + 1}, "call.args.amount: must be <= 1000000000000"),
    ("transfer_funds", {"vendor": "GB33BUKB20201555555555", "amount": 5}, "call.args.vendor: must match ^V-[0-9]{1,8}$"),
    ("transfer_funds", {"vendor": "V-123456789", "amount": 5}, "call.args.vendor: must match ^V-[0-9]{1,8}$"),
    ("transfer_funds", {"vendor": "V-221", "amount": 5, "currency": "GBP"},
     "call.args.currency: must be one of 'EUR', 'USD'"),
    ("transfer_funds", {"vendor": "V-221", "amount": 5, "reference": "r" * 141},
     "call.args.reference: must have at most 140 characters"),
    ("transfer_funds", {"vendor": "V-221", "amount": 5, "to_account": "X"},
     "call.args.to_account: is not an argument of this tool"),
    ("modify_iam_policy", {"principal": "p", "grant": ["ok", 7]}, "call.args.grant[1]: must be a string, not a number"),
    ("modify_iam_policy", {"principal": "p", "grant": "admin"}, "call.args.grant: must be a list, not a string"),
    ("bulk_export", {"table": "payroll"}, "call.args.table: must be one of 'invoices', 'vendors'"),
])
def test_a_mismatch_names_the_json_path_of_the_bad_field(tool, args, message):
    err = refusal(args, REGISTRY.tools[tool])
    assert str(err) == message
    assert err.field == message.split(": ", 1)[0]


def test_the_check_is_part_of_admission_before_the_policy():
    req = CallRequest(rpc="Decide", task_id="tsk_1", agent_id="finance_agent_v2", tool="read_invoice", args={})
    with pytest.raises(InvalidRequest, match=r"^call\.args\.invoice_id: is required$"):
        validate_call(req, REGISTRY, LimitsConfig())


def test_nested_objects_and_extra_arguments():
    schema = {"type": "object", "additionalProperties": False, "required": ["order"],
              "properties": {"order": {"type": "object", "required": ["lines"], "properties": {
                  "lines": {"type": "array", "items": {"type": "object", "required": ["sku"],
                                                       "properties": {"sku": {"type": "string"}}}}}}}}
    assert str(refusal({"order": {"lines": [{"sku": "a"}, {}]}}, schema)) == "call.args.order.lines[1].sku: is required"
    assert str(refusal({"order": {"lines": []}, "dry_run": True}, schema)) == \
        "call.args.dry_run: is not an argument of this tool"
    validate_args_schema({"order": {"lines": [{"sku": "a"}]}}, spec(schema))


def test_the_message_never_repeats_the_callers_value():
    secret = "s3cr3t-" + "x" * 10_000
    err = refusal({"invoice_id": [secret]}, REGISTRY.tools["read_invoice"])
    assert secret[:7] not in str(err) and len(str(err)) < 200


def test_a_tool_without_a_schema_is_not_checked():
    validate_args_schema({"anything": [1, {"at": "all"}]}, ToolSpec(command=["/bin/true"], access="read"))


# -- at load: the schema itself -------------------------------------------------

def load_with(tmp_path: Path, schema) -> ToolRegistry:
    path = tmp_path / "tools.yaml"
    path.write_text(yaml.safe_dump({"tools": {"t": {"command": ["/bin/true"], "access": "read",
                                                   "args_schema": schema}}}))
    return load_registry(path)


def load_error(tmp_path: Path, schema) -> str:
    with pytest.raises(ConfigError) as err:
        load_with(tmp_path, schema)
    text = str(err.value)
    assert str(tmp_path / "tools.yaml") in text and "field 'tools.t.args_schema'" in text
    return text


@pytest.mark.parametrize("schema,why", [
    # Unknown keywords are ignored by the draft: a typo would accept every call.
    ({"type": "object", "require": ["invoice_id"]}, "require: unknown keyword"),
    ({"type": "object", "properties": {"a": {"type": "string", "maxlength": 3}}},
     "properties.a.maxlength: unknown keyword"),
    ({"type": "object", "properties": {"a": {"type": "strin"}}}, "properties.a.type: not a valid Draft 2020-12 schema"),
    ({"type": "object", "required": "invoice_id"}, "required: not a valid Draft 2020-12 schema"),
    ({"type": "object", "properties": {"a": {"pattern": "("}}}, "properties.a.pattern: not a valid Draft 2020-12"),
    ({"type": "array"}, "type: must be 'object'"),
    ({"properties": {"a": {"type": "string"}}}, "type: must be 'object'"),
    ({"type": "object", "$schema": "http://json-schema.org/draft-07/schema#"}, "$schema: must be"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}},
     "properties.a.$ref: only a reference within this schema"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "does not resolve within this schema"),
    ({"type": "object", "properties": {"a": {"enum": [float("inf")]}}}, "numbers must be finite"),
    ({"type": "object", "properties": {"a": {"const": datetime.date(2024, 1, 2)}}},
     "date is not a JSON value"),
    ("type: object", "Input should be a valid dictionary"),
])
def test_a_bad_schema_stops_the_load_naming_file_field_and_keyword(tmp_path, schema, why):
    assert why in load_error(tmp_path, schema)


def test_a_strict_schema_with_local_references_loads(tmp_path):
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "$defs": {"money": {"type": "number", "exclusiveMinimum": 0}},
              "properties": {"amount": {"$ref": "#/$defs/money"}}, "required": ["amount"]}
    tool = load_with(tmp_path, schema).tools["t"]
    validate_args_schema({"amount": 5}, tool)
    assert str(refusal({"amount": -1}, tool)) == "call.args.amount: must be > 0"


def test_the_schema_is_part_of_the_policy_revision(tmp_path):
    """A schema change decides calls differently, so it is a new revision (a reload names it)."""
    config = PolicyConfig(rego_dir=REPO / "rego")
    a = build_policy_set(config.rego_dir, {}, config, load_with(tmp_path, {"type": "object"}))
    b = build_policy_set(config.rego_dir, {}, config, load_with(tmp_path, {"type": "object", "required": ["x"]}))
    assert a.revision != b.revision
