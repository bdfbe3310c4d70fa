"""`aecl policy test` and `aecl policy check`: OPA runs the Rego unit tests of
any policy directory (the policy the embedded engine enforces is the one OPA
compiles, so OPA's tests are its tests), and check adds opa fmt, opa check
--strict with the capabilities file, and coverage."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from enforcer.cli import main
from tests.conftest import REPO
from tests.policy.test_engines import opa_binary

AECL = [sys.executable, "-m", "enforcer"]


def write_policy(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return directory


POLICY = """
    package demo

    import rego.v1

    default allow := false

    allow if input.role == "admin"

    allow if in_scope

    in_scope if data.demo_data.open_actions[_] == input.action
"""
# `with` over rules that use other rules: what rego-cpp could not run.
PASSING_TESTS = """
    package demo_test

    import rego.v1

    test_allow_admin if {
    	data.demo.allow with input as {"role": "admin"}
    }

    test_allow_open_action if {
    	data.demo.allow with input as {"role": "guest", "action": "read"}
    }

    test_deny_guest_write if {
    	not data.demo.allow with input as {"role": "guest", "action": "write"}
    }
"""
FAILING_TESTS = """
    package demo_broken_test

    import rego.v1

    test_guest_is_admin if {
    	data.demo.allow with input as {"role": "guest", "action": "write"}
    }
"""
DATA = '{"open_actions": ["read"]}'
CAPABILITIES = (REPO / "rego" / "capabilities.json").read_text()


def aecl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*AECL, *args], capture_output=True, text=True, cwd=REPO)


def good_policy(tmp_path: Path) -> Path:
    return write_policy(tmp_path / "good", {"demo.rego": POLICY, "demo_test.rego": PASSING_TESTS,
                                            "demo_data/data.json": DATA, "capabilities.json": CAPABILITIES})


def test_policy_test_runs_opa_on_the_repository_policy():
    out = aecl("policy", "test", "--rego", str(REPO / "rego"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS:" in out.stdout


def test_policy_test_runs_opa_on_any_directory(tmp_path):
    out = aecl("policy", "test", "--rego", str(good_policy(tmp_path)), "--verbose")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "data.demo_test.test_allow_open_action: PASS" in out.stdout


def test_a_failing_test_fails_policy_test_by_name(tmp_path):
    rego = write_policy(tmp_path / "bad", {"demo.rego": POLICY, "broken_test.rego": FAILING_TESTS,
                                           "demo_data/data.json": DATA})
    out = aecl("policy", "test", "--rego", str(rego))
    assert out.returncode != 0
    assert "test_guest_is_admin" in out.stdout


def test_policy_test_enforces_coverage(tmp_path):
    rego = write_policy(tmp_path / "thin", {"demo.rego": POLICY + "\nunused if input.never\n",
                                            "demo_test.rego": PASSING_TESTS, "demo_data/data.json": DATA})
    assert aecl("policy", "test", "--rego", str(rego), "--coverage", "--threshold", "100").returncode != 0
    assert aecl("policy", "test", "--rego", str(rego), "--coverage", "--threshold", "50").returncode == 0


def test_policy_test_has_no_embedded_runner_any_more():
    out = aecl("policy", "test", "--engine", "embedded")
    assert out.returncode == 2 and "unrecognized arguments: --engine" in out.stderr


def test_policy_check_passes_the_repository_policy():
    out = aecl("policy", "check", str(REPO / "rego"), "--coverage", "95")
    assert out.returncode == 0, out.stdout + out.stderr
    for step in ("ok   opa fmt", "ok   opa check --strict --capabilities", "ok   opa test", "ok   coverage"):
        assert step in out.stdout
    assert out.stdout.splitlines()[-1].endswith("all checks passed")


def test_policy_check_passes_another_directory_with_its_own_capabilities(tmp_path):
    out = aecl("policy", "check", str(good_policy(tmp_path)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert str(tmp_path / "good" / "capabilities.json") in out.stdout


@pytest.mark.parametrize(("edit", "step", "words"), [
    ({"demo.rego": POLICY.replace("default allow := false", "default   allow := false")}, "fmt",
     "demo.rego"),
    ({"demo.rego": POLICY + "\nleak := http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:1/\"})\n"},
     "check", "http.send"),
    ({"broken_test.rego": FAILING_TESTS}, "test", "test_guest_is_admin"),
], ids=["unformatted", "forbidden-builtin", "failing-test"])
def test_policy_check_reports_the_step_that_fails(tmp_path, edit, step, words):
    rego = good_policy(tmp_path)
    write_policy(rego, edit)
    out = aecl("policy", "check", str(rego))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"FAIL opa {step}" in out.stdout and words in out.stdout
    last = out.stdout.splitlines()[-1]
    assert "failed: " in last and step in last.split("failed: ")[1].split(", ")


def test_policy_check_reports_low_coverage(tmp_path):
    rego = good_policy(tmp_path)
    write_policy(rego, {"demo.rego": POLICY + "\nunused if input.never\n"})
    out = aecl("policy", "check", str(rego), "--coverage", "99")
    assert out.returncode == 1 and "FAIL coverage" in out.stdout and "uncovered lines" in out.stdout


def test_policy_check_without_a_directory_or_opa_is_a_clear_error(tmp_path):
    out = aecl("policy", "check", str(tmp_path / "nope"))
    assert out.returncode == 2 and "policy directory does not exist" in out.stderr
    out = aecl("policy", "check", str(good_policy(tmp_path)), "--opa", str(tmp_path / "no-opa"))
    assert out.returncode == 2 and "not an executable file" in out.stderr and "Traceback" not in out.stderr


def test_policy_check_without_capabilities_names_the_flag(tmp_path):
    rego = write_policy(tmp_path / "nocaps", {"demo.rego": POLICY, "demo_test.rego": PASSING_TESTS})
    copy = tmp_path / "pkg"
    # An installed package has no rego/ beside it: the default must then be named.
    shutil.copytree(REPO / "enforcer", copy / "enforcer")
    out = subprocess.run([sys.executable, "-m", "enforcer", "policy", "check", str(rego), "--opa", opa_binary()],
                         capture_output=True, text=True, cwd=copy)
    assert out.returncode == 2 and "--capabilities" in out.stderr


def test_main_runs_policy_test_in_process(tmp_path):
    assert main(["policy", "test", "--rego", str(good_policy(tmp_path))]) == 0
