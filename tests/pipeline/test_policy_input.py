"""The policy input document: the agent's args verbatim, and beside them the
normalised form of each path argument the registry declares."""

from __future__ import annotations

import copy
import json

import pytest

from enforcer.manifests import ToolSpec
from enforcer.pipeline.policy_input import MAX_DECODE_ROUNDS, build_policy_input, normalize_path
from enforcer.pipeline.request import CallRequest
from enforcer.state.store import Task

SAVE = ToolSpec(command=["/bin/true"], access="write", path_args=["path", "dest"])
PLAIN = ToolSpec(command=["/bin/true"], access="read")


def task():
    return Task(task_id="tsk_1", agent_id="agent_1", declared_goal="g", declared_actions=(),
                started_at=900.0, expires_at=2100.0, calls_so_far=0)


def build(args, tool=SAVE):
    req = CallRequest(rpc="Execute", task_id="tsk_1", agent_id="agent_1", tool="save_report", args=args)
    return build_policy_input(req, tool, task(), 1000.0)


def test_raw_args_stay_exactly_as_sent():
    args = {"path": "..%2f../etc//passwd", "dest": "/proc/self/root", "note": "../x"}
    sent = copy.deepcopy(args)
    doc = build(args)
    assert doc["action"]["args"] == sent
    assert args == sent  # building the input changed nothing
    assert doc["paths"]["path"]["raw"] == sent["path"]


def test_only_declared_path_arguments_are_normalised():
    doc = build({"path": "a/./b", "note": "../x"})
    assert set(doc["paths"]) == {"path"}  # dest not sent, note not declared
    assert doc["tool"]["path_args"] == ["path", "dest"]
    assert build({"path": "../x"}, PLAIN)["paths"] == {}
    assert build({}, PLAIN)["tool"]["path_args"] == []


def test_the_input_is_plain_json():
    doc = build({"path": "%ff%00/../x", "dest": "\\..\\x"})
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


# raw -> (normalized, absolute, escapes_root, had_encoding)
CASES = [
    ("reports/q1.csv", "reports/q1.csv", False, False, False),
    ("a/./b//c/", "a/b/c", False, False, False),
    ("a/..", ".", False, False, False),
    ("", ".", False, False, False),
    ("..", "..", False, True, False),
    ("../etc/passwd", "../etc/passwd", False, True, False),
    ("a/../../b", "../b", False, True, False),
    ("reports/../../../etc", "../../etc", False, True, False),
    ("..%2f..%2fetc", "../../etc", False, True, True),
    ("%2e%2e/%2E%2E/etc", "../../etc", False, True, True),
    ("%252e%252e%252fetc", "../etc", False, True, True),  # encoded twice
    ("reports%2f..%2f..%2fx", "../x", False, True, True),
    ("/proc/self/root", "/proc/self/root", True, False, False),
    ("//etc///passwd", "/etc/passwd", True, False, False),
    ("/../etc", "/etc", True, False, False),
    ("%2fetc%2fshadow", "/etc/shadow", True, False, True),
    ("..\\..\\windows", "..\\..\\windows", False, False, False),  # `\` is not a separator
    ("100%", "100%", False, False, False),
    ("%zz/a", "%zz/a", False, False, False),
]


@pytest.mark.parametrize(("raw", "normalized", "absolute", "escapes", "encoded"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_normalize_path(raw, normalized, absolute, escapes, encoded):
    assert normalize_path(raw) == {
        "raw": raw, "normalized": normalized, "absolute": absolute, "escapes_root": escapes,
        "had_encoding": encoded, "still_encoded": False,
    }


def test_decoding_is_bounded_and_says_when_it_gave_up():
    deep = "..%2fetc"
    for _ in range(MAX_DECODE_ROUNDS):
        deep = deep.replace("%", "%25")
    p = normalize_path(deep)
    assert p["had_encoding"] and p["still_encoded"]
    just_enough = "..%2fetc"
    for _ in range(MAX_DECODE_ROUNDS - 1):
        just_enough = just_enough.replace("%", "%25")
    p = normalize_path(just_enough)
    assert (p["normalized"], p["escapes_root"], p["still_encoded"]) == ("../etc", True, False)


def test_a_long_encoded_path_is_decoded_in_bounded_time():
    p = normalize_path("..%" + "25" * 20000 + "2f")  # 20001 layers of encoding
    assert p["still_encoded"] and p["had_encoding"]
