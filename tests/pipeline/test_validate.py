"""Untrusted request fields: identifiers anchored at their true end, and the
arguments the registry declares (amounts, paths) typed before policy sees them."""

from __future__ import annotations

import pytest

from enforcer.config import LimitsConfig
from enforcer.errors import InvalidRequest
from enforcer.manifests import ToolRegistry, ToolSpec
from enforcer.pipeline.request import CallRequest, StartTaskRequest
from enforcer.pipeline.validate import ID_RE, validate_call, validate_start_task

LIMITS = LimitsConfig()
REGISTRY = ToolRegistry(tools={
    "read_invoice": ToolSpec(command=["/bin/true"], access="read"),
    "issue_refund": ToolSpec(command=["/bin/true"], access="write", amount_arg="amount"),
    "save_report": ToolSpec(command=["/bin/true"], access="write", path_args=["path", "dest"]),
})

CONTROL = [chr(c) for c in range(0x20)] + ["\x7f"]


def call(tool="read_invoice", args=None, *, task_id="tsk_1", agent_id="agent_1"):
    return CallRequest(rpc="Execute", task_id=task_id, agent_id=agent_id, tool=tool, args=args or {})


def start(agent_id="agent_1", declared=("read_invoice",)):
    return StartTaskRequest(agent_id=agent_id, declared_goal="g", declared_actions=tuple(declared))


def placements(good):
    """`good` with a control character at its start, middle and end."""
    mid = len(good) // 2
    for c in CONTROL:
        yield f"{c}{good}"
        yield f"{good[:mid]}{c}{good[mid:]}"
        yield f"{good}{c}"


def refused(fn, *a):
    with pytest.raises(InvalidRequest) as err:
        fn(*a)
    return err.value


def test_well_formed_requests_pass():
    assert validate_call(call(), REGISTRY, LIMITS) is REGISTRY.tools["read_invoice"]
    validate_start_task(start())


def test_id_pattern_does_not_match_before_a_trailing_newline():
    # In Python's re, `$` also matches just before a final "\n".
    assert ID_RE.fullmatch("agent_1") and not ID_RE.match("agent_1\n")


@pytest.mark.parametrize("field", ["task_id", "agent_id"])
def test_control_characters_in_call_ids_are_refused(field):
    for bad in placements("agent_1"):
        err = refused(validate_call, call(**{field: bad}), REGISTRY, LIMITS)
        assert err.field == field, repr(bad)


def test_control_characters_in_the_start_task_agent_id_are_refused():
    for bad in placements("agent_1"):
        assert refused(validate_start_task, start(agent_id=bad)).field == "agent_id", repr(bad)


def test_control_characters_in_declared_actions_are_refused():
    for bad in placements("read_invoice"):
        err = refused(validate_start_task, start(declared=["read_invoice", bad]))
        assert err.field == "declared_actions[1]", repr(bad)


def test_control_characters_in_the_tool_name_are_refused_without_echoing_them():
    for bad in placements("read_invoice"):
        err = refused(validate_call, call(tool=bad), REGISTRY, LIMITS)
        assert err.field == "call.name", repr(bad)
        assert not any(c in str(err) for c in CONTROL), repr(str(err))


@pytest.mark.parametrize("amount", [-100000, -1e308, -0.01, -1])
def test_a_negative_amount_is_refused(amount):
    err = refused(validate_call, call("issue_refund", {"amount": amount}), REGISTRY, LIMITS)
    assert err.field == "call.args.amount"
    assert "must not be negative" in str(err)


@pytest.mark.parametrize("amount", ["100000", "-100000", True, None, [1], {"v": 1}])
def test_an_amount_that_is_not_a_number_is_left_to_the_policy(amount):
    # Not refused here (the replay suite records string amounts), but never
    # "not large": both engines count it as large (tests/policy/test_engines.py,
    # amount_as_string_is_large; rego/aecl/risk_test.rego).
    validate_call(call("issue_refund", {"amount": amount}), REGISTRY, LIMITS)


@pytest.mark.parametrize("amount", [0, 0.0, -0.0, 10, 1e308])
def test_non_negative_amounts_pass(amount):
    validate_call(call("issue_refund", {"amount": amount}), REGISTRY, LIMITS)


def test_a_missing_amount_is_left_to_the_policy():
    # The policy counts an amount it cannot read as large (fail closed).
    validate_call(call("issue_refund", {}), REGISTRY, LIMITS)


def test_an_amount_named_arg_of_another_tool_is_not_checked():
    validate_call(call("read_invoice", {"amount": -5}), REGISTRY, LIMITS)


@pytest.mark.parametrize("value", [1, None, ["a"], {"p": "a"}, True])
def test_a_declared_path_argument_must_be_a_string(value):
    err = refused(validate_call, call("save_report", {"path": "ok.csv", "dest": value}), REGISTRY, LIMITS)
    assert err.field == "call.args.dest"
    assert "must be a string" in str(err)


def test_a_path_argument_may_be_anything_textual_validation_leaves_it_to_policy():
    validate_call(call("save_report", {"path": "../../etc/passwd", "dest": "%2e%2e/x"}), REGISTRY, LIMITS)
