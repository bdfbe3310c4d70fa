"""The policy input document: the agent's args verbatim, and beside them the
normalised form of each path argument the registry declares (and, for a
tool with a path_root, whether it resolves inside that root)."""

from __future__ import annotations

import copy
import json
import posixpath
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from enforcer.manifests import ToolSpec
from enforcer.pipeline.policy_input import MAX_DECODE_ROUNDS, build_policy_input, normalize_path
from enforcer.pipeline.request import CallRequest
from enforcer.state.store import Task

SAVE = ToolSpec(command=["/bin/true"], access="write", path_args=["path", "dest"])
PLAIN = ToolSpec(command=["/bin/true"], access="read")
ROOTED = ToolSpec(mcp={"upstream": "fs", "tool": "move_file"}, access="write", irreversible=True,
                  path_args=["source", "destination"], path_root="/workspace")


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
        # Without a root: "inside" means relative and below its own start.
        "root": None, "resolved": None, "inside_root": not absolute and not escapes,
    }


# raw -> (resolved against /workspace, inside_root)
ROOTED_CASES = [
    ("/workspace", "/workspace", True),
    ("/workspace/", "/workspace", True),
    ("/workspace/notes/a.txt", "/workspace/notes/a.txt", True),
    ("notes/a.txt", "/workspace/notes/a.txt", True),  # relative: taken from the root
    ("", "/workspace", True),
    (".", "/workspace", True),
    ("a/../b", "/workspace/b", True),
    ("//workspace///a", "/workspace/a", True),
    ("%2fworkspace%2fa", "/workspace/a", True),
    ("/workspace/../workspace/a", "/workspace/a", True),  # leaves and comes back: lexically inside
    ("/etc/passwd", "/etc/passwd", False),
    ("/", "/", False),
    ("..", "/", False),
    ("../etc", "/etc", False),
    ("/workspace/../etc", "/etc", False),
    ("/workspace/a/../../etc", "/etc", False),
    ("/workspace%2f..%2fetc", "/etc", False),
    ("%252fworkspace%252f..%252fetc", "/etc", False),  # encoded twice
    ("//etc", "/etc", False),
    ("/workspace2/x", "/workspace2/x", False),  # the root as a mere prefix is not the root
    ("/workspacex", "/workspacex", False),
    ("/workspace/..\\..\\etc", "/workspace/..\\..\\etc", True),  # `\` is not a separator
]


@pytest.mark.parametrize(("raw", "resolved", "inside"), ROOTED_CASES, ids=[c[0] or "empty" for c in ROOTED_CASES])
def test_normalize_path_against_a_root(raw, resolved, inside):
    p = normalize_path(raw, "/workspace")
    assert (p["root"], p["resolved"], p["inside_root"]) == ("/workspace", resolved, inside)
    assert p["normalized"] == normalize_path(raw)["normalized"]  # today's fields unchanged
    assert p["escapes_root"] == normalize_path(raw)["escapes_root"]


def test_a_root_with_a_trailing_slash_or_the_file_system_root():
    assert normalize_path("a", "/workspace/")["resolved"] == "/workspace/a"
    assert normalize_path("/workspace2", "/workspace/")["inside_root"] is False
    assert normalize_path("/etc/passwd", "/")["inside_root"] is True
    assert normalize_path("../..", "/")["resolved"] == "/"


def test_a_rooted_tool_carries_its_root_in_the_input():
    doc = build({"source": "/workspace/a", "destination": "../b", "note": "/etc"}, ROOTED)
    assert doc["tool"]["path_root"] == "/workspace"
    assert set(doc["paths"]) == {"source", "destination"}
    assert doc["paths"]["source"]["inside_root"] is True
    assert doc["paths"]["destination"] == {
        "raw": "../b", "normalized": "../b", "absolute": False, "escapes_root": True, "had_encoding": False,
        "still_encoded": False, "root": "/workspace", "resolved": "/b", "inside_root": False,
    }
    assert build({"path": "x"})["tool"]["path_root"] is None
    assert build({"path": "x"})["paths"]["path"]["root"] is None


SEGMENT = st.from_regex(r"\A[a-z0-9]{1,8}\Z")
# Path components with no `..` in them: `.`, `%`, `\`, spaces, unicode, but
# never a `/`, so `..` cannot arise as a segment (`%` is left out: `%2e%2e`
# would decode to one).
COMPONENT = st.text(st.characters(blacklist_characters="/%", blacklist_categories=("Cs",)),
                    min_size=0, max_size=6).filter(lambda c: ".." not in c)
ROOT = st.lists(SEGMENT, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s))
SEPARATOR = st.sampled_from(["/", "//", "/./"])


def _join(parts: list[str], seps: list[str]) -> str:
    out = parts[0] if parts else ""
    for part, sep in zip(parts[1:], seps, strict=False):
        out += sep + part
    return out


@settings(max_examples=300, deadline=None)
@given(root=ROOT, parts=st.lists(COMPONENT, max_size=6), seps=st.lists(SEPARATOR, min_size=6, max_size=6),
       absolute=st.booleans(), encode=st.booleans())
def test_root_joined_with_components_without_dotdot_is_inside(root, parts, seps, absolute, encode):
    rest = _join(parts, seps)
    assume(absolute or not rest.startswith("/"))  # a leading "" part would make it absolute
    raw = root + "/" + rest if absolute else rest
    if encode:
        raw = quote(raw, safe="")
    p = normalize_path(raw, root)
    assert p["inside_root"] is True
    assert p["resolved"] == root or p["resolved"].startswith(root + "/")
    assert not p["still_encoded"]


@settings(max_examples=300, deadline=None)
@given(root=ROOT, climbs=st.integers(1, 6), first=COMPONENT, parts=st.lists(COMPONENT, max_size=5),
       seps=st.lists(SEPARATOR, min_size=6, max_size=6), absolute=st.booleans(), encode=st.booleans())
def test_a_path_that_climbs_out_of_the_root_is_outside(root, climbs, first, parts, seps, absolute, encode):
    # After normalisation it starts with ../ (relative to the root), and
    # where it lands is no segment of the root: `_` is in none of them.
    rest = _join(["_" + first, *parts], seps)
    relative = "../" * climbs + rest
    assert posixpath.normpath(relative).startswith("../")
    raw = root + "/" + relative if absolute else relative
    if encode:
        raw = quote(raw, safe="")
    p = normalize_path(raw, root)
    assert p["inside_root"] is False
    assert not (p["resolved"] + "/").startswith(root + "/")


@settings(max_examples=300, deadline=None)
@given(root=ROOT, parts=st.lists(st.one_of(COMPONENT, st.just(".."), SEGMENT), max_size=8),
       seps=st.lists(SEPARATOR, min_size=8, max_size=8), absolute=st.booleans())
def test_inside_root_agrees_with_relpath(root, parts, seps, absolute):
    rest = _join(parts, seps)
    raw = root + "/" + rest if absolute else rest
    assume(absolute or not rest.startswith("/"))
    p = normalize_path(raw, root)
    expected = posixpath.relpath(posixpath.normpath(posixpath.join(root, raw)), root)
    assert p["inside_root"] is (expected != ".." and not expected.startswith("../"))


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
