"""OPA's sprintf in the embedded engine (enforcer.policy.sprintf) against
`opa eval`, the reference: every case goes through the real path (a policy
compiled by `opa build -t wasm`, its sprintf import answered by this
implementation under wasmtime) and through OPA's own evaluator, with the same
input JSON. Go's fmt verbs as OPA reaches them: %v %s %d %q %f %.Nf %e %g %x
%X %o %b %c %U %t %T, flags, widths, precisions, argument indexes, Go's error
forms, and arrays, objects, sets, null and booleans as OPA prints them."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from enforcer.policy.sprintf import BigInt, Number, Object, Set, go_arg, go_sprintf, parse_rego_value, rego_text
from enforcer.policy.wasm import WasmPolicy
from enforcer.policy.wasm_build import compile_wasm
from tests.policy.test_engines import opa_binary

S = "h\u00e9llo"
# [format, arguments]; "RAW:<json>" is spliced into the input as raw JSON text
# (numbers whose text matters: 1E5, 1.50, out of float range).
CASES = [
    ["%s", ["plain"]], ["%v", ["plain"]], ["%q", ["quote\"and\nnewline\tand\u0001é"]], ["%+q", [S]], ["%#q", ["back`tick"]],
    ["%#q", ["raw"]], ["%x", [S]], ["%X", ["hi"]], ["% x", ["hi"]], ["%# x", ["hi"]], ["%#x", ["hi"]], ["%.2x", ["hello"]],
    ["%10s|", ["right"]], ["%-10s|", ["left"]], ["%05s", ["ab"]], ["%.3s", [S]], ["%5.1s|", ["abc"]], ["%*s|", [6, "w"]],
    ["%-*s|", [6, "w"]], ["%*s|", [-6, "w"]], ["%.*s", [2, "abc"]], ["%d", ["str"]], ["%t", [True]], ["%t", ["true"]],
    ["%v", [True]], ["%v", [None]], ["%s", [None]], ["%d", [None]], ["%T", ["s"]], ["%T", [1]], ["%T", [1.5]], ["%T", [[1]]],
    ["%d", [42]], ["%v", [42]], ["%+d", [42]], ["% d", [42]], ["%05d", [-42]], ["%-5d|", [42]], ["%.3d", [7]], ["%8.3d|", [7]],
    ["%x", [255]], ["%X", [255]], ["%#x", [255]], ["%#o", [8]], ["%O", [8]], ["%b", [5]], ["%#b", [5]], ["%o", [-8]],
    ["%c", [65]], ["%c", [233]], ["%q", [65]], ["%+q", [233]], ["%U", [65]], ["%#U", [0x1F600]], ["%U", [-1]],
    ["%s", [42]], ["%f", [42]], ["%.0d", [0]], ["%5.0d|", [0]], ["%d", [-9223372036854775808]], ["%d", [9223372036854775807]],
    ["%d", [9223372036854775808]], ["%v", [123456789012345678901234567890]], ["%x", [123456789012345678901234567890]],
    ["%X", [-123456789012345678901234567890]], ["%#x", [18446744073709551616]], ["%s", [18446744073709551616]],
    ["%f", [18446744073709551616]], ["%40d|", [18446744073709551616]], ["%-40d|", [18446744073709551616]],
    ["%040d", [18446744073709551616]], ["%.25d", [18446744073709551616]], ["%+d", [18446744073709551616]],
    ["%v", [0.3]], ["%v", [1.0]], ["%v", [100000.5]], ["%v", [1e6]], ["%v", [123456.0]], ["%v", [1234567.5]],
    ["%v", [1e-5]], ["%v", [0.0001]], ["%v", [1e308]], ["%v", [-1e308]], ["%v", [5e-324]], ["%v", [1795610556.877]],
    ["%f", [0.3]], ["%.2f", [2.675]], ["%.2f", [0.125]], ["%.0f", [2.5]], ["%.0f", [3.5]], ["%8.3f|", [3.14159]],
    ["%-8.2f|", [2.5]], ["%08.3f", [-3.14159]], ["%+.1f", [3.0]], ["% .1f", [3.0]], ["%e", [123456.789]], ["%E", [0.000123]],
    ["%.2e", [1e308]], ["%g", [0.3]], ["%g", [1e21]], ["%g", [1e20]], ["%G", [1e-7]], ["%.3g", [100.0]], ["%.3g", [1234.0]],
    ["%.10g", [0.1]], ["%.1g", [0.05]], ["%#g", [1.0]], ["%#v", [1.0]], ["%#.3g", [1.0]], ["%#f", [1.0]], ["%#.0f", [1.0]],
    ["%#e", [1.0]], ["%x", [3.0]], ["%X", [-0.1]], ["%.2x", [1.0]], ["%b", [1.0]], ["%F", [1.5]], ["%d", [1.5]],
    ["%s", [1.5]], ["%q", [1.5]], ["%v", [1.5e300]], ["%v", ["RAW:1e400"]], ["%d", ["RAW:-1e400"]], ["%v", ["RAW:1E5"]], ["%v", ["RAW:1.50"]], ["%d", ["RAW:-0"]], ["%v", ["RAW:[1e2, 1.50]"]],
    ["%v", [[1, "a", None, True, 2.5, {"k": "v"}]]], ["%s", [{"b": 1, "a": [1, 2], "c": {"z": None}}]], ["%d", [[1]]],
    ["%q", [["x\n"]]], ["%v", [[]]], ["%v", [{}]], ["%v", [["é\u0001\"\\"]]], ["%10v|", [[1]]], ["%-10v|", [{"a": 1}]],
    ["%v", [{"10": 1, "9": 2, "a": 3}]],
    ["%d %d", [1]], ["%d", [1, 2]], ["%d", [1, "x", None]], ["%[2]v %[1]v", ["a", "b"]], ["%[3]v", ["a"]], ["%[0]v", ["a"]],
    ["%[x]v", ["a"]], ["%[2]*[1]d|", [2, 5]], ["%[1]d %d %d", [1, 2, 3]], ["%[1]d %[1]d", [1]], ["%*d", ["w", 1]],
    ["%.*d", ["p", 1]], ["%.*d", [-2, 1]], ["%", []], ["%!", [1]], ["%z", [1]], ["%é", [1]], ["100%%", []], ["%%d", [1]],
    ["%5%|", []], ["%-", [1]], ["%.", [1]], ["%3.", [1]], ["%[1]", [1]], ["", [1]], ["no verbs", []], ["%p", [1]],
    ["%v|%v", ["", ""]], ["%08s", ["-1"]], ["%+s", ["x"]], ["%#s", ["x"]], ["%+v", [5]], ["%#v", [5]], ["%#v", ["q\""]],
    ["%#v", [[1]]], ["%+v", [1.5]], ["% v", [-1.5]], ["%010v", [-1.5]], ["%-010v|", [-1.5]], ["%+010.2f", [1.5]],
    ["%x", [-1]], ["%#X", [-255]], ["%c", [-1]], ["%c", [1114112]], ["%q", [1114112]], ["%q", [39]], ["%q", [10]],
    ["%U", [1114112]], ["%#U", [10]], ["%.6U", [65]], ["%x", [""]], ["%5x|", [""]], ["%q", ["\u00a0\u2028\ufeff"]],
    ["%+q", ["\U0001F600"]], ["%q", ["\U0001F600"]], ["%#q", ["tab\tok"]], ["%#q", ["nl\n"]], ["%s", ["\ufffd"]],
    ["%v", [0]], ["%v", [-0.0]], ["%f", [-0.0]], ["%g", [0.0]], ["%e", [0.0]], ["%x", [0.0]], ["%.3e", [9.9995]],
    ["%.1f", [0.05]], ["%.1f", [0.25]], ["%.1f", [0.35]], ["%v", [1e21]], ["%v", [1e20]], ["%v", [123456789.0]],
    ["%.20f", [0.1]], ["%.17g", [0.1]], ["%v", [2.5e-5]], ["%v", [4.940656458412465e-324]],
]

POLICY = """package t

import rego.v1

out := [sprintf(c[0], c[1]) | some c in input.cases]

# Values JSON cannot carry: sets, non-string keys, computed numbers.
lit := [
	sprintf("%v", [{3, 1, "a"}]), sprintf("%v", [set()]), sprintf("%v", [{1: "x", "b": [set(), {2, 1}]}]),
	sprintf("%s|%d", [{true, false, null}, {"k": {1}}]), sprintf("%v", [[0.1 + 0.2, 2 / 2, 7 / 2]]),
	sprintf("%v %v %d", [0.1 + 0.2, 10 / 3, 6 / 2]), sprintf("%v", [{[1], [0, 5], {"a": 1}, {"a": 0, "b": 1}, {"a": 0}}]),
	sprintf("%v", [{1.5, 1, 2, -1, 1.25}]), sprintf("%v", [{"x": 1, 1: 2, null: 3, true: 4, [1]: 5}]),
	sprintf("risk score %v within threshold %v", [round(0.7 * 1000) / 1000, 0.6]),
]
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    text = re.sub(r'"RAW:([^"]*)"', lambda m: m.group(1), json.dumps({"cases": CASES}))
    wasm = compile_wasm({"t.rego": POLICY}, opa_binary(), entrypoints=["t/out", "t/lit"])
    mine = {e: json.loads(WasmPolicy(wasm, {}, entrypoint=f"t/{e}").evaluate_json(text.encode()))[0]["result"]
            for e in ("out", "lit")}
    d = tmp_path_factory.mktemp("sprintf")
    (d / "t.rego").write_text(POLICY)
    (d / "input.json").write_text(text)
    theirs = {}
    for e in ("out", "lit"):
        done = subprocess.run([opa_binary(), "eval", "-f", "json", "-d", str(d / "t.rego"), "-i",
                               str(d / "input.json"), f"data.t.{e}"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        theirs[e] = json.loads(done.stdout)["result"][0]["expressions"][0]["value"]
    return json.loads(text)["cases"], mine, theirs


@pytest.mark.parametrize("n", range(len(CASES)))
def test_sprintf_formats_as_opa_does(results, n):
    cases, mine, theirs = results
    assert len(mine["out"]) == len(theirs["out"]) == len(CASES)
    assert mine["out"][n] == theirs["out"][n], f"sprintf{tuple(cases[n])}"


def test_sprintf_prints_sets_objects_and_computed_numbers_as_opa_does(results):
    _, mine, theirs = results
    assert mine["lit"] == theirs["lit"]
    assert theirs["lit"][0] == '{1, 3, "a"}' and theirs["lit"][1] == "set()"


def test_the_table_reaches_every_verb_and_error_form(results):
    _, mine, _ = results
    out = "\n".join(mine["out"])
    for form in ("%!d(string=", "(MISSING)", "%!(EXTRA", "(BADINDEX)", "%!(BADWIDTH)", "%!(NOVERB)", "%!(BADPREC)",
                 "%!t(string=true)", "big.Int", "0x1.8p+01", "1e+06", "U+1F600"):
        assert form in out, form


def test_rego_values_parse_with_their_number_text():
    assert parse_rego_value('[1.50,1e2,{1,2},set(),{1:"x"}]') == [
        Number("1.50"), Number("1e2"), Set((Number("1"), Number("2"))), Set(()),
        Object(((Number("1"), "x"),))]
    assert rego_text(parse_rego_value('{"b":{2,1},"a":null}')) == '{"a": null, "b": {1, 2}}'
    assert go_arg(Number("9223372036854775808")) == BigInt(9223372036854775808)
    assert go_arg(Number("1e400")) == "1e400" and go_arg(Number("7")) == 7 and go_arg(Number("1.0")) == 1.0


def test_go_sprintf_direct():
    assert go_sprintf("%s=%d (%v)", ["a", 1, 0.5]) == "a=1 (0.5)"
    assert go_sprintf("%5.2f|%-4d|%x", [3.14159, 7, "hi"]) == " 3.14|7   |6869"
