"""Declared resources and the resource a call touches: validated at StartTask
and at the call, carried from the wire, and put in the policy input beside
the task's history."""

from __future__ import annotations

import json

import pytest

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer.config import LimitsConfig
from enforcer.errors import InvalidRequest
from enforcer.manifests import ToolRegistry, ToolSpec
from enforcer.pipeline.policy_input import MAX_HISTORY, build_policy_input, call_amount, call_resource
from enforcer.pipeline.request import CallRequest, StartTaskRequest
from enforcer.pipeline.validate import MAX_DECLARED_RESOURCES, MAX_RESOURCE_BYTES, validate_call, validate_start_task
from enforcer.server.convert import start_task_request
from enforcer.state.store import Call, Task

LIMITS = LimitsConfig()
UPDATE = ToolSpec(command=["/bin/true"], access="write", resource_arg="record_id", connectors=["records"])
TRANSFER = ToolSpec(command=["/bin/true"], access="write", amount_arg="amount", connectors=["payments"])
REGISTRY = ToolRegistry(tools={"update_record": UPDATE, "transfer_funds": TRANSFER})


def start(resources):
    return StartTaskRequest(agent_id="agent_1", declared_goal="g", declared_actions=("update_record",),
                            declared_resources=tuple(resources))


def call(tool="update_record", args=None):
    return CallRequest(rpc="Execute", task_id="tsk_1", agent_id="agent_1", tool=tool, args=args or {})


def refused(fn, *a) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        fn(*a)
    return err.value


# -- StartTask.declared_resources ---------------------------------------------------


def test_declared_resources_within_bounds_pass():
    validate_start_task(start([]))
    validate_start_task(start(["INV-1001", "billing service", "é" * (MAX_RESOURCE_BYTES // 2)]))
    validate_start_task(start([f"R-{i}" for i in range(MAX_DECLARED_RESOURCES)]))


def test_too_many_declared_resources_are_refused():
    err = refused(validate_start_task, start([f"R-{i}" for i in range(MAX_DECLARED_RESOURCES + 1)]))
    assert err.field == "declared_resources" and "more than 256" in str(err)


@pytest.mark.parametrize(("bad", "why"), [
    ("", "must not be empty"),
    ("x" * (MAX_RESOURCE_BYTES + 1), "longer than 256 bytes"),
    ("é" * (MAX_RESOURCE_BYTES // 2 + 1), "longer than 256 bytes"),  # bytes, not characters
    ("INV-1\n", "printable"),
    ("INV\x00-1", "printable"),
    ("\x1b[31mINV", "printable"),
    ("INV\u2028", "printable"),
])
def test_a_declared_resource_must_be_a_bounded_printable_string(bad, why):
    err = refused(validate_start_task, start(["INV-1001", bad]))
    assert err.field == "declared_resources[1]" and why in str(err)


def test_declared_resources_come_from_the_wire():
    msg = pb.StartTaskRequest(agent_id="a", declared_goal="g", declared_actions=["update_record"],
                              declared_resources=["REC-1", "REC-2"])
    assert start_task_request(msg).declared_resources == ("REC-1", "REC-2")
    assert start_task_request(pb.StartTaskRequest(agent_id="a")).declared_resources == ()


# -- the call's resource argument ------------------------------------------------------


@pytest.mark.parametrize("value", ["REC-1", "", 1002, -7, "x" * MAX_RESOURCE_BYTES])
def test_a_resource_argument_is_a_bounded_string_or_integer(value):
    validate_call(call(args={"record_id": value}), REGISTRY, LIMITS)


@pytest.mark.parametrize(("value", "why"), [
    (True, "not a boolean"), (1.5, "not a number"), (None, "not null"), (["REC-1"], "not a list"),
    ({"id": 1}, "not an object"), ("x" * (MAX_RESOURCE_BYTES + 1), "longer than 256 bytes"),
    (10**300, "longer than 256 bytes"),
    pytest.param(10**5000, "longer than 256 bytes", id="an-integer-too-long-for-str"),
])
def test_other_resource_arguments_are_refused_naming_the_field(value, why):
    err = refused(validate_call, call(args={"record_id": value}), REGISTRY, LIMITS)
    assert err.field == "call.args.record_id" and why in str(err)


def test_a_missing_resource_argument_is_left_to_the_policy():
    validate_call(call(args={}), REGISTRY, LIMITS)


def test_the_registry_refuses_a_resource_that_is_also_the_amount_and_a_connector_twice():
    with pytest.raises(ValueError, match="both an amount and a resource"):
        ToolSpec(command=["/bin/true"], access="write", amount_arg="amount", resource_arg="amount")
    with pytest.raises(ValueError, match="'payments' is listed more than once"):
        ToolSpec(command=["/bin/true"], access="write", connectors=["payments", "payments"])


# -- the policy input ----------------------------------------------------------------------


def task(resources=()):
    return Task(task_id="tsk_1", agent_id="agent_1", declared_goal="g", declared_actions=("update_record",),
                started_at=900.0, expires_at=2100.0, calls_so_far=2, declared_resources=tuple(resources))


def earlier(n: int, tool="update_record") -> list[Call]:
    return [Call("tsk_1", i + 1, 900.0 + i, tool, "approve", None, f"REC-{i}") for i in range(n)]


def test_the_input_carries_the_resource_the_declared_resources_and_the_history():
    doc = build_policy_input(call(args={"record_id": "REC-2", "fields": {}}), UPDATE, task(["REC-1"]), 1000.0,
                             earlier(2))
    assert doc["resource"] == "REC-2"
    assert doc["tool"]["resource_arg"] == "record_id" and doc["tool"]["connectors"] == ["records"]
    assert doc["task"]["declared_resources"] == ["REC-1"]
    assert doc["task"]["history"] == [
        {"tool": "update_record", "outcome": "approve", "amount": None, "resource": "REC-0", "at": 900.0},
        {"tool": "update_record", "outcome": "approve", "amount": None, "resource": "REC-1", "at": 901.0},
    ]
    assert doc["task"]["history_truncated"] is False
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


def test_without_history_the_input_says_so():
    doc = build_policy_input(call("transfer_funds", {"amount": 5}), TRANSFER, task(), 1000.0)
    assert doc["resource"] is None and doc["tool"]["resource_arg"] is None
    assert doc["task"]["history"] == [] and doc["task"]["declared_resources"] == []


def test_the_input_carries_at_most_the_last_calls():
    doc = build_policy_input(call(), UPDATE, task(), 1000.0, earlier(MAX_HISTORY + 5))
    history = doc["task"]["history"]
    assert len(history) == MAX_HISTORY and history[0]["resource"] == "REC-5"
    assert doc["task"]["history_truncated"] is True
    told = build_policy_input(call(), UPDATE, task(), 1000.0, earlier(3), history_truncated=True)
    assert told["task"]["history_truncated"] is True and len(told["task"]["history"]) == 3


@pytest.mark.parametrize(("args", "amount"), [
    ({"amount": 100000}, 100000), ({"amount": 2.5}, 2.5), ({"amount": "100"}, None), ({"amount": True}, None),
    ({}, None), ({"amount": float("inf")}, None),
])
def test_the_recorded_amount_is_the_amount_arguments_number(args, amount):
    assert call_amount(args, TRANSFER) == amount
    assert call_amount(args, UPDATE) is None  # no amount_arg


def test_the_recorded_resource_is_the_resource_arguments_text():
    assert call_resource({"record_id": "REC-1"}, UPDATE) == "REC-1"
    assert call_resource({"record_id": 1002}, UPDATE) == "1002"
    assert call_resource({}, UPDATE) is None
    assert call_resource({"record_id": "REC-1"}, TRANSFER) is None  # no resource_arg
