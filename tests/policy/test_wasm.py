"""The embedded engine (enforcer.policy.wasm) fails closed: every way an
evaluation can go wrong is a PolicyError, so the pipeline blocks. Modules
are real: compiled by the real opa binary, or, for faults OPA never emits,
written in WebAssembly text with OPA's ABI and run by the real wasmtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import wasmtime

from enforcer.config import PolicyConfig
from enforcer.errors import ConfigError, MalformedDecision, PolicyError
from enforcer.policy.decision import parse_decision
from enforcer.policy.evaluate import evaluate_decision
from enforcer.policy.policyset import build_policy_set, load_modules
from enforcer.policy.wasm import PAGE, WasmEngine, WasmPolicy
from enforcer.policy.wasm_build import ARTIFACT, compile_wasm, modules_digest, shipped_meta, shipped_wasm, stale_reason
from tests.conftest import REPO
from tests.policy.test_engines import AGENTS, POLICY, opa_binary, policy_input

# -- modules OPA compiles --------------------------------------------------------


def compiled(tmp_path: Path, source: str, entrypoint: str = "aecl/main/decision") -> bytes:
    return compile_wasm({"aecl/main.rego": textwrap.dedent(source).lstrip()}, opa_binary(), entrypoints=[entrypoint])


GREEDY = """
    package aecl.main

    import rego.v1

    # An array of input.n strings, each input.n long: as much memory as asked.
    decision := [concat("", [s | some _ in numbers.range(1, input.n); s := "x"]) | some _ in numbers.range(1, input.n)]
"""


def test_a_policy_that_allocates_past_the_memory_limit_is_a_policy_error(tmp_path):
    policy = WasmPolicy(compiled(tmp_path, GREEDY), {}, max_memory_bytes=8 << 20)
    assert len(policy.evaluate({"n": 10})) == 10  # within the limit
    with pytest.raises(PolicyError, match="memory"):
        policy.evaluate({"n": 4000})  # about 16 MB of strings
    assert len(policy.evaluate({"n": 10})) == 10  # a fresh instance serves the next call


def test_an_input_larger_than_the_memory_limit_is_a_policy_error(tmp_path):
    policy = WasmPolicy(compiled(tmp_path, GREEDY), {}, max_memory_bytes=4 << 20)
    with pytest.raises(PolicyError, match="does not fit"):
        policy.evaluate({"n": 1, "padding": "y" * (5 << 20)})
    assert len(policy.evaluate({"n": 3, "padding": "y" * (1 << 20)})) == 3  # memory grows within the limit


def test_a_module_without_the_entrypoint_is_a_policy_error(tmp_path):
    other = compiled(tmp_path, """
        package aecl.other

        import rego.v1

        decision := 1
    """, entrypoint="aecl/other/decision")
    with pytest.raises(PolicyError, match="no entrypoint aecl/main/decision"):
        WasmPolicy(other, {})


def test_a_built_in_the_engine_does_not_implement_is_refused_at_load_naming_it(tmp_path):
    source = textwrap.dedent("""
        package aecl.main

        import rego.v1

        decision := regex.split(`,`, input.s)
    """).lstrip()
    with pytest.raises(ConfigError, match=r"regex\.split.*policy.engine: opa"):
        WasmPolicy(compile_wasm({"aecl/main.rego": source}, opa_binary()), {})


def test_undefined_decision_is_malformed(tmp_path):
    policy = WasmPolicy(compiled(tmp_path, """
        package aecl.main

        import rego.v1

        decision := 1 if input.yes
    """), {})
    assert policy.evaluate({"yes": True}) == 1
    with pytest.raises(MalformedDecision, match="undefined"):
        policy.evaluate({})


def test_a_policy_that_does_not_compile_is_a_config_error_with_opas_message(tmp_path):
    with pytest.raises(ConfigError, match="does not compile.*main.rego"):
        compile_wasm({"aecl/main.rego": "package aecl.main\n\ndecision := {{{\n"}, opa_binary())


def test_the_data_document_is_loaded_into_the_instance(tmp_path):
    policy = WasmPolicy(compiled(tmp_path, """
        package aecl.main

        import rego.v1

        decision := data.aecl.config.limit * input.x
    """), {"aecl": {"config": {"limit": 21}}})
    assert policy.evaluate({"x": 2}) == 42


# -- faults OPA never compiles: hand-written modules with OPA's ABI ------------


def abi_module(eval_body: str, *, minor: int = 3, entrypoints: str = '{"aecl/main/decision":0}') -> bytes:
    """A module with OPA's ABI whose opa_eval does `eval_body`; data at 1024:
    "{}" and the entrypoints JSON, result strings from 2048."""
    ep = entrypoints.replace("\\", "\\\\").replace('"', '\\"')
    return wasmtime.wat2wasm(f"""
    (module
      (import "env" "memory" (memory 2))
      (import "env" "opa_abort" (func $abort (param i32)))
      (data (i32.const 1024) "{{}}\\00")
      (data (i32.const 1100) "{ep}\\00")
      (data (i32.const 2048) "not json\\00")
      (data (i32.const 2100) "[{{\\"result\\":1}},{{\\"result\\":2}}]\\00")
      (data (i32.const 2200) "[{{\\"result\\":\\"ok\\"}}]\\00")
      (data (i32.const 2300) "boom\\00")
      (data (i32.const 2400) "\\"just a string\\"\\00")
      (global (export "opa_wasm_abi_version") i32 (i32.const 1))
      (global (export "opa_wasm_abi_minor_version") i32 (i32.const {minor}))
      (func (export "builtins") (result i32) (i32.const 1))
      (func (export "entrypoints") (result i32) (i32.const 2))
      (func (export "opa_json_dump") (param i32) (result i32)
        (if (result i32) (i32.eq (local.get 0) (i32.const 2)) (then (i32.const 1100)) (else (i32.const 1024))))
      (func (export "opa_value_dump") (param i32) (result i32) (i32.const 1024))
      (func (export "opa_malloc") (param i32) (result i32) (i32.const 4096))
      (func (export "opa_json_parse") (param i32 i32) (result i32) (i32.const 8))
      (func (export "opa_heap_ptr_get") (result i32) (i32.const 16384))
      (func (export "opa_eval") (param i32 i32 i32 i32 i32 i32 i32) (result i32) {eval_body})
    )""")


@pytest.mark.parametrize(("body", "error", "match"), [
    ("(unreachable)", PolicyError, "trapped.*unreachable"),
    ("(call $abort (i32.const 2300)) (i32.const 0)", PolicyError, "opa_abort: boom"),
    ("(i32.load (i32.const 200000))", PolicyError, "out of bounds"),
    ("(loop $l (br $l)) (i32.const 0)", PolicyError, "fuel budget"),
    ("(i32.const 2048)", MalformedDecision, "not JSON|unparseable"),
    ("(i32.const 2100)", MalformedDecision, "no single decision"),
    ("(i32.const 2400)", MalformedDecision, "result set"),
    ("(i32.const 70000000)", MalformedDecision, "outside its memory"),
    ("(i32.const 0)", MalformedDecision, "outside its memory"),
], ids=["trap", "abort", "fault", "runaway", "not-json", "two-results", "not-a-result-set", "wild-pointer", "null"])
def test_every_evaluation_failure_is_a_policy_error(body, error, match):
    policy = WasmPolicy(abi_module(body), {}, fuel=10_000_000)
    with pytest.raises(error, match=match):
        policy.evaluate({"x": 1})
    assert issubclass(error, PolicyError)


def test_a_trapped_instance_is_replaced_before_the_next_call():
    # Traps on the input {"trap":1} (10 bytes of JSON), answers otherwise.
    body = "(if (i32.eq (local.get 4) (i32.const 10)) (then (unreachable))) (i32.const 2200)"
    policy = WasmPolicy(abi_module(body), {})
    assert policy.evaluate({"a": 1}) == "ok"
    with pytest.raises(PolicyError):
        policy.evaluate({"trap": 1})
    assert not policy._fresh
    assert policy.evaluate({"a": 1}) == "ok"
    assert policy._fresh


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"minor": 1}, "ABI 1.1"),
    ({"entrypoints": '{"other/rule":0}'}, "no entrypoint aecl/main/decision"),
    ({"entrypoints": "[1]"}, "out of shape"),
])
def test_a_module_the_engine_cannot_drive_is_refused_at_load(kwargs, match):
    with pytest.raises(PolicyError, match=match):
        WasmPolicy(abi_module("(i32.const 2200)", **kwargs), {})


def test_bytes_that_are_not_webassembly_are_a_policy_error():
    with pytest.raises(PolicyError, match="not a WebAssembly module"):
        WasmPolicy(b"\0asm garbage", {})


def test_an_engine_failure_becomes_a_block_in_the_pipeline():
    engine = WasmEngine(build_policy_set(POLICY.rego_dir, AGENTS, POLICY), wasm=abi_module("(unreachable)"))
    d = evaluate_decision(engine, policy_input("read_invoice"), decision_id="d")
    assert (d.outcome, d.gate, d.risk_score) == ("block", "engine", 1.0)
    assert "trapped" in d.reason


# -- the shipped build ---------------------------------------------------------------


def test_the_committed_compiled_policy_is_the_build_of_rego(tmp_path):
    """`make gen-check` fails on a stale artifact; so does this test."""
    assert stale_reason(REPO / "rego") is None, "run 'make gen' and commit enforcer/policy/compiled"
    modules = load_modules(REPO / "rego")
    assert shipped_meta()["modules_digest"] == modules_digest(modules)
    assert shipped_wasm(modules) == compile_wasm(modules, opa_binary())  # byte for byte


def test_a_changed_policy_makes_the_artifact_stale(tmp_path):
    rego = tmp_path / "rego"
    subprocess.run(["cp", "-r", str(REPO / "rego"), str(rego)], check=True)
    assert stale_reason(rego) is None
    path = rego / "aecl" / "main.rego"
    path.write_text(path.read_text() + "\n# a comment changes the digest\n")
    assert "built from other Rego" in stale_reason(rego)
    out = subprocess.run([sys.executable, "-m", "enforcer.policy.wasm_build", "--check", "--rego", str(rego)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1 and "make gen" in out.stderr


def _without_opa(tmp_path: Path) -> dict[str, str]:
    """An environment where no opa binary can be found."""
    env = {k: v for k, v in os.environ.items() if k != "OPA_BIN"}
    env["PATH"] = "/usr/bin:/bin"
    env["AECL_OPA_CACHE"] = str(tmp_path / "no-opa")
    return env


DECIDE_SHIPPED = """
import json
from enforcer.policy.opa import find_opa_binary
from enforcer.policy.policyset import build_policy_set
from enforcer.policy.wasm import WasmEngine
from tests.policy.test_engines import AGENTS, POLICY, policy_input
try:
    find_opa_binary()
    raise SystemExit("an opa binary was found")
except Exception as e:
    if isinstance(e, SystemExit):
        raise
engine = WasmEngine(build_policy_set(POLICY.rego_dir, AGENTS, POLICY))
print(json.dumps(engine.evaluate(policy_input("delete_record", {"record_id": "r1"}))))
"""


def test_the_shipped_policy_is_served_without_any_opa_binary(tmp_path):
    out = subprocess.run([sys.executable, "-c", DECIDE_SHIPPED], capture_output=True, text=True, cwd=REPO,
                         env=_without_opa(tmp_path))
    assert out.returncode == 0, out.stderr
    d = parse_decision(json.loads(out.stdout), revision="r", decision_id="d")
    assert (d.outcome, d.gate) == ("block", "allowlist")


def test_a_changed_policy_without_opa_is_refused_with_a_clear_message(tmp_path):
    rego = tmp_path / "rego"
    subprocess.run(["cp", "-r", str(REPO / "rego"), str(rego)], check=True)
    (rego / "aecl" / "extra.rego").write_text("package aecl.extra\n\nimport rego.v1\n\nx := 1\n")
    code = DECIDE_SHIPPED.replace("build_policy_set(POLICY.rego_dir,", f"build_policy_set(__import__('pathlib').Path({str(rego)!r}),")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=_without_opa(tmp_path))
    assert out.returncode != 0
    assert "not the compiled policy shipped with AECL" in out.stderr and "no opa binary" in out.stderr


def test_engines_for_the_same_modules_share_one_compilation(tmp_path):
    ps = build_policy_set(POLICY.rego_dir, AGENTS, POLICY)
    a = WasmEngine(ps)
    b = a.derive(build_policy_set(POLICY.rego_dir, AGENTS, PolicyConfig(rego_dir=POLICY.rego_dir,
                                                                         hitl=POLICY.hitl, risk=POLICY.risk)))
    assert a.wasm is b.wasm or a.wasm == b.wasm
    assert ARTIFACT.read_bytes() == a.wasm


def test_memory_limit_is_in_pages():
    assert PAGE == 65536
