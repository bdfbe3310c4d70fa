"""Both engines behind one interface: the embedded engine (the policy
compiled by OPA to WebAssembly, run by wasmtime) and a real OPA sidecar (the
binary scripts/build-opa.sh builds) give identical decision documents on one
shared table, and both fail closed."""

from __future__ import annotations

import json
import subprocess

import pytest

from enforcer.config import OpaConfig, PolicyConfig
from enforcer.errors import EngineUnavailable, MalformedDecision, PolicyError
from enforcer.manifests import AgentManifest, ToolSpec, load_agents, load_registry
from enforcer.pipeline.policy_input import path_arguments
from enforcer.policy.decision import parse_decision
from enforcer.policy.wasm import WasmEngine
from enforcer.policy.opa import OpaEngine, OpaProcess, free_port
from enforcer.policy.policyset import build_policy_set
from tests.conftest import EXAMPLES, REPO
from tests.policy.opa_helpers import opa_binary

REGISTRY = load_registry(EXAMPLES / "tools.yaml")
# Tools the example registry does not ship: one whose only risk flag is its
# amount, and one that declares path arguments.
EXTRA_TOOLS = {
    "issue_refund": ToolSpec(command=["/bin/true"], access="write", amount_arg="amount"),
    "save_report": ToolSpec(command=["/bin/true"], access="write", path_args=["path", "dest"]),
}
# The example agent plus one whose risky actions are governed by the score alone.
AGENTS = {
    **load_agents(EXAMPLES / "agents"),
    "ops_agent": AgentManifest(agent_id="ops_agent", auto_approve_threshold=0.3,
                               allowed_actions=["transfer_funds", "modify_iam_policy", "bulk_export",
                                                "read_invoice", "delete_record", "send_email", *EXTRA_TOOLS]),
}
POLICY = PolicyConfig(rego_dir=REPO / "rego")




def policy_input(action, args=None, *, agent="finance_agent_v2", untrusted=False, calls=0,
                 goal="pay vendor invoices: transfer funds", declared=(), now=1000.0):
    tool = REGISTRY.get(action) or EXTRA_TOOLS[action]
    args = args or {}
    return {
        "agent_id": agent,
        "action": {"name": action, "args": args},
        "tool": {
            "access": tool.access, "irreversible": tool.irreversible,
            "affects_production": tool.affects_production, "bulk_operation": tool.bulk_operation,
            "amount_arg": tool.amount_arg, "path_args": list(tool.path_args),
        },
        "paths": path_arguments(args, tool),
        "context": {"untrusted_input_source": untrusted, "triggering_input": ""},
        "task": {"task_id": "tsk_1", "declared_goal": goal, "declared_actions": list(declared),
                 "calls_so_far": calls, "started_at": 900.0, "expires_at": 2100.0},
        "now": now,
    }


# (case id, input, expected outcome, expected gate, words the reason must contain)
TABLE = [
    ("read_approved", policy_input("read_invoice", {"invoice_id": "INV-1"}), "approve", "risk", ""),
    ("report_in_goal", policy_input("generate_payment_report", goal="generate payment report"),
     "approve", "risk", ""),
    ("blocked_list", policy_input("delete_record", {"record_id": "r1"}), "block", "allowlist", "block list"),
    ("block_wins_bulk", policy_input("bulk_export"), "block", "allowlist", "block list"),
    ("unknown_agent", policy_input("read_invoice", agent="ghost"), "block", "allowlist", "unknown agent"),
    ("transfer_escalates", policy_input("transfer_funds", {"amount": 100000}, untrusted=True),
     "escalate", "context_rules", "requires_human_approval"),
    ("small_transfer_still_rule", policy_input("transfer_funds", {"amount": 10}),
     "escalate", "context_rules", "requires_human_approval"),
    ("out_of_scope", policy_input("generate_payment_report", declared=["read_invoice"]),
     "block", "intent", "Action scope exceeds declared task intent"),
    ("write_not_in_goal", policy_input("generate_payment_report", goal="read invoices"),
     "block", "intent", "Action scope exceeds declared task intent"),
    # The goal names the action by its words, in any order and case, filler words aside.
    ("goal_names_action_in_other_words", policy_input("generate_payment_report",
                                                      goal="Please generate a payment report"),
     "approve", "risk", ""),
    ("goal_words_in_any_order_and_case", policy_input("generate_payment_report",
                                                      goal="REPORT: payments? The payment report, GENERATE it"),
     "approve", "risk", ""),
    ("goal_missing_one_word", policy_input("generate_payment_report", goal="Please generate a report"),
     "block", "intent", "the declared goal does not name 'generate_payment_report'"),
    ("goal_word_only_inside_another", policy_input("generate_payment_report", goal="regenerate payment reports"),
     "block", "intent", "does not name"),
    ("declared_actions_stay_precise", policy_input("generate_payment_report", goal="generate payment report",
                                                   declared=["read_invoice"]),
     "block", "intent", 'not among the declared actions ["read_invoice"]'),
    # rego-cpp printed this reason as invalid JSON; OPA and the embedded engine agree.
    ("agent_id_with_quote_and_newline", policy_input("read_invoice", agent='gh"ost\nagent'),
     "block", "allowlist", "unknown agent 'gh\"ost\nagent'"),
    ("agent_id_with_unicode_and_backslash", policy_input("read_invoice", agent="\u00e9\\\u2028\U0001F600"),
     "block", "allowlist", "unknown agent"),
    ("call_51_blocked", policy_input("read_invoice", calls=50), "block", "limits", "50"),
    ("float_deadline_in_whole_seconds", policy_input("read_invoice", now=5000.0), "block", "limits",
     "deadline passed at 2100"),
    ("call_50_allowed", policy_input("read_invoice", calls=49), "approve", "risk", ""),
    ("task_expired", policy_input("read_invoice", now=5000.0), "block", "limits", "expired"),
    ("risk_escalates_alone", policy_input("bulk_export", agent="ops_agent", untrusted=True),
     "escalate", "risk", "(flags: bulk_operation, untrusted_input)"),
    ("score_equal_to_threshold_approves", policy_input("bulk_export", agent="ops_agent"),
     "approve", "risk", "risk score 0.3 within threshold 0.3"),
    ("hitl_route", policy_input("modify_iam_policy", agent="ops_agent", goal="modify iam policy"),
     "escalate", "hitl", "action 'modify_iam_policy' always requires approval"),
    ("hitl_irreversible_uncompensated", policy_input("send_email", agent="ops_agent", goal="send email"),
     "escalate", "hitl", "irreversible and has no compensating action"),
    ("hitl_route_and_floor", policy_input("transfer_funds", {"amount": 100000}, agent="ops_agent",
                                          goal="transfer funds", untrusted=True),
     "escalate", "hitl", "always requires approval; risk score 1 is above the approval floor 0.7"),
    ("amount_not_a_number", policy_input("transfer_funds", {"amount": "lots"}),
     "escalate", "context_rules", ""),
    # The amount is the tool's only risk flag: its magnitude decides.
    ("small_refund_approves", policy_input("issue_refund", {"amount": 10}, agent="ops_agent",
                                           declared=["issue_refund"]),
     "approve", "risk", "risk score 0 within"),
    ("large_refund_escalates", policy_input("issue_refund", {"amount": 100000}, agent="ops_agent",
                                            declared=["issue_refund"]),
     "escalate", "risk", "(flags: large_amount)"),
    ("negative_large_amount_is_large", policy_input("issue_refund", {"amount": -100000}, agent="ops_agent",
                                                    declared=["issue_refund"]),
     "escalate", "risk", "(flags: large_amount)"),
    ("most_negative_amount_is_large", policy_input("issue_refund", {"amount": -1e308}, agent="ops_agent",
                                                   declared=["issue_refund"]),
     "escalate", "risk", "(flags: large_amount)"),
    ("small_negative_amount_is_small", policy_input("issue_refund", {"amount": -10}, agent="ops_agent",
                                                    declared=["issue_refund"]),
     "approve", "risk", "risk score 0 within"),
    ("amount_as_string_is_large", policy_input("issue_refund", {"amount": "100000"}, agent="ops_agent",
                                               declared=["issue_refund"]),
     "escalate", "risk", "(flags: large_amount)"),
    ("missing_amount_is_large", policy_input("issue_refund", {}, agent="ops_agent", declared=["issue_refund"]),
     "escalate", "risk", "(flags: large_amount)"),
    # Declared path arguments: the policy reads the normalised form.
    ("path_within_root_approves", policy_input("save_report", {"path": "reports/./q1.csv"}, agent="ops_agent",
                                               declared=["save_report"]),
     "approve", "risk", ""),
    ("path_dotdot_escape_blocks", policy_input("save_report", {"path": "reports/../../etc/passwd"},
                                               agent="ops_agent", declared=["save_report"]),
     "block", "paths", "path argument 'path' climbs above its starting directory"),
    ("path_encoded_escape_blocks", policy_input("save_report", {"dest": "..%252f..%252fetc"},
                                                agent="ops_agent", declared=["save_report"]),
     "block", "paths", "path argument 'dest' climbs above its starting directory"),
    ("path_absolute_blocks", policy_input("save_report", {"path": "ok.csv", "dest": "/proc/self/root/etc"},
                                          agent="ops_agent", declared=["save_report"]),
     "block", "paths", "path argument 'dest' is absolute"),
    ("path_backslash_is_not_a_separator", policy_input("save_report", {"path": "..\\..\\x"},
                                                       agent="ops_agent", declared=["save_report"]),
     "approve", "risk", ""),
]


@pytest.fixture(scope="module")
def policy_set():
    return build_policy_set(POLICY.rego_dir, AGENTS, POLICY)


@pytest.fixture(scope="module")
def opa_sidecar():
    proc = OpaProcess(opa_binary(), "127.0.0.1", free_port())
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def engines(policy_set, opa_sidecar):
    embedded = WasmEngine(policy_set)
    opa = OpaEngine(policy_set, OpaConfig(port=opa_sidecar.port, timeout_s=5))
    yield embedded, opa
    opa.close()


@pytest.mark.parametrize(("case", "doc", "outcome", "gate", "words"), TABLE, ids=[t[0] for t in TABLE])
def test_engines_agree_on_the_decision_table(engines, case, doc, outcome, gate, words):
    embedded, opa = engines
    a, b = embedded.evaluate(doc), opa.evaluate(doc)
    assert a == b, f"{case}: embedded {a} != opa {b}"
    d = parse_decision(a, revision="r", decision_id="d")
    assert (d.outcome, d.gate) == (outcome, gate), d
    assert words in d.reason


def test_both_engines_score_the_untrusted_large_transfer_at_least_0_7(engines):
    doc = policy_input("transfer_funds", {"amount": 100000}, untrusted=True)
    for engine in engines:
        d = parse_decision(engine.evaluate(doc), revision="r", decision_id="d")
        assert d.risk_score >= 0.7
        # transfer_funds is compensable (reverse_transfer): not irreversible.
        assert set(d.risk_flags) == {"large_amount", "affects_production", "untrusted_input"}


def test_stopped_opa_is_unavailable(policy_set):
    dead = OpaEngine(policy_set, OpaConfig(port=free_port(), timeout_s=0.5))
    with pytest.raises(EngineUnavailable, match="unavailable"):
        dead.evaluate(policy_input("read_invoice"))
    dead.close()


def test_sidecar_restarted_without_policies_gets_them_again(policy_set, tmp_path):
    port = free_port()
    proc = OpaProcess(opa_binary(), "127.0.0.1", port)
    proc.start()
    try:
        engine = OpaEngine(policy_set, OpaConfig(port=port, timeout_s=5))
        assert engine.evaluate(policy_input("read_invoice"))["outcome"] == "approve"
        proc.stop()
        with pytest.raises(EngineUnavailable):
            engine.evaluate(policy_input("read_invoice"))
        proc.start()  # a fresh OPA with no policy loaded
        assert engine.evaluate(policy_input("read_invoice"))["outcome"] == "approve"
        engine.close()
    finally:
        proc.stop()


MALFORMED = """package aecl.main

import rego.v1

decision := {"outcome": "allow", "why": "shape is wrong"}
"""

UNDEFINED = """package aecl.main

import rego.v1

decision := d if {
	d := {"outcome": "approve"}
	input.never_set
}
"""


@pytest.mark.parametrize("source", [MALFORMED, UNDEFINED], ids=["malformed", "undefined"])
def test_off_shape_policy_is_an_error_in_both_engines(tmp_path, opa_sidecar, source):
    rego = tmp_path / "rego"
    (rego / "aecl").mkdir(parents=True)
    (rego / "aecl" / "main.rego").write_text(source)
    ps = build_policy_set(rego, AGENTS, PolicyConfig(rego_dir=rego))
    doc = policy_input("read_invoice")
    for engine in (WasmEngine(ps), OpaEngine(ps, OpaConfig(port=opa_sidecar.port, timeout_s=5))):
        with pytest.raises((MalformedDecision, PolicyError)):
            parse_decision(engine.evaluate(doc), revision=ps.revision, decision_id="d")


def test_opa_sidecar_refuses_a_policy_that_does_not_compile(tmp_path, opa_sidecar):
    rego = tmp_path / "rego"
    (rego / "aecl").mkdir(parents=True)
    (rego / "aecl" / "main.rego").write_text("package aecl.main\n\ndecision := {{{\n")
    ps = build_policy_set(rego, AGENTS, PolicyConfig(rego_dir=rego))
    with pytest.raises(PolicyError, match="refused"):
        OpaEngine(ps, OpaConfig(port=opa_sidecar.port, timeout_s=5))


def test_capabilities_file_refuses_http_send(tmp_path):
    (tmp_path / "callout.rego").write_text(
        'package aecl.callout\n\nimport rego.v1\n\n'
        'leak := http.send({"method": "GET", "url": "http://127.0.0.1:1/"})\n'
    )
    out = subprocess.run(
        [opa_binary(), "check", "--strict", "--capabilities", str(REPO / "rego/capabilities.json"),
         str(tmp_path)], capture_output=True, text=True,
    )
    assert out.returncode != 0
    assert "http.send" in out.stdout + out.stderr


def test_capabilities_file_leaves_out_every_network_builtin():
    caps = json.loads((REPO / "rego/capabilities.json").read_text())
    names = {b["name"] for b in caps["builtins"]}
    assert not names & {"http.send", "net.lookup_ip_addr", "opa.runtime"}
    assert caps["allow_net"] == []
    assert "sprintf" in names  # the file is a real capabilities file, not an empty one


def test_repo_rego_passes_opa_check_strict():
    out = subprocess.run(
        [opa_binary(), "check", "--strict", "--capabilities", str(REPO / "rego/capabilities.json"),
         str(REPO / "rego/aecl")], capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _variant(threshold):
    """The example policy set with another auto-approve threshold (another revision)."""
    agents = {**AGENTS, "ops_agent": AGENTS["ops_agent"].model_copy(update={"auto_approve_threshold": threshold})}
    return build_policy_set(POLICY.rego_dir, agents, POLICY)


def test_a_decision_never_passes_under_another_services_revision(policy_set, opa_sidecar):
    mine = OpaEngine(policy_set, OpaConfig(port=opa_sidecar.port, timeout_s=5))
    doc = policy_input("bulk_export", agent="ops_agent", untrusted=True)
    assert mine.evaluate(doc)["outcome"] == "escalate"
    other = OpaEngine(_variant(0.9), OpaConfig(port=opa_sidecar.port, timeout_s=5))  # same sidecar
    assert other.evaluate(doc)["outcome"] == "approve"
    with pytest.raises(PolicyError, match="runs policy revision"):
        mine.evaluate(doc)  # never an answer from a policy it did not push
    other.close()
    mine.close()


def test_derived_engine_takes_over_the_sidecar_and_the_old_one_never_pushes_back(policy_set):
    port = free_port()
    first = OpaEngine(policy_set, OpaConfig(port=port, timeout_s=5, supervise=True))
    try:
        second = first.derive(_variant(0.9))
        doc = policy_input("bulk_export", agent="ops_agent", untrusted=True)
        assert second.evaluate(doc)["outcome"] == "approve"
        first._pushed = False  # as after a dropped connection
        with pytest.raises(PolicyError, match="retry"):
            first.evaluate(doc)
        first.close()  # the supervised sidecar moved to `second` and keeps running
        assert second.evaluate(doc)["outcome"] == "approve"
    finally:
        second.close()
        first.close()
