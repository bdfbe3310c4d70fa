package aecl.risk_test

import rego.v1

import data.aecl.risk

config := {
	"agents": {"a1": {"auto_approve_threshold": 0.6}},
	"risk": {
		"amount_threshold": 50000,
		"weights": {
			"large_amount": 0.5, "irreversible": 0.3, "affects_production": 0.4,
			"bulk_operation": 0.3, "untrusted_input": 0.2,
		},
	},
}

transfer(amount, untrusted) := {
	"agent_id": "a1",
	"action": {"name": "transfer_funds", "args": {"amount": amount}},
	"tool": {"amount_arg": "amount", "irreversible": true, "affects_production": false, "bulk_operation": false},
	"context": {"untrusted_input_source": untrusted},
}

test_allow_small_trusted_transfer if {
	not risk.escalate with input as transfer(100, false) with data.aecl.config as config
	s := risk.score with input as transfer(100, false) with data.aecl.config as config
	s == 0.3
}

test_escalate_large_untrusted_transfer if {
	risk.escalate with input as transfer(100000, true) with data.aecl.config as config
	s := risk.score with input as transfer(100000, true) with data.aecl.config as config
	s == 1
	f := risk.flags with input as transfer(100000, true) with data.aecl.config as config
	f == ["irreversible", "large_amount", "untrusted_input"]
	r := risk.reason with input as transfer(100000, true) with data.aecl.config as config
	contains(r, "exceeds the agent's auto-approve threshold 0.6")
}

test_escalate_unreadable_amount if {
	f := risk.flags with input as transfer("100000", false) with data.aecl.config as config
	"large_amount" in f
}

test_escalate_amount_exactly_at_threshold_is_not_large if {
	f := risk.flags with input as transfer(50000, false) with data.aecl.config as config
	not "large_amount" in f
}

test_allow_score_is_capped if {
	all_flags := {
		"agent_id": "a1",
		"action": {"name": "x", "args": {"amount": 1000000}},
		"tool": {"amount_arg": "amount", "irreversible": true, "affects_production": true, "bulk_operation": true},
		"context": {"untrusted_input_source": true},
	}
	s := risk.score with input as all_flags with data.aecl.config as config
	s == 1
}

test_escalate_agent_without_threshold if {
	risk.escalate with input as transfer(100, false)
		with data.aecl.config as json.patch(config, [{"op": "replace", "path": "/agents", "value": {}}])
}

test_allow_flags_sum_rounds_exactly if {
	prod_bulk := {
		"agent_id": "a1",
		"action": {"name": "x", "args": {}},
		"tool": {"irreversible": false, "affects_production": true, "bulk_operation": true},
		"context": {"untrusted_input_source": true},
	}
	s := risk.score with input as prod_bulk with data.aecl.config as config
	s == 0.9
}

test_escalate_reason_lists_flags_unquoted if {
	r := risk.reason with input as transfer(100000, true) with data.aecl.config as config
	r == "risk score 1 exceeds the agent's auto-approve threshold 0.6 (flags: irreversible, large_amount, untrusted_input)"
}

# A tool whose only risk flag is its amount.
refund(amount) := {
	"agent_id": "a1",
	"action": {"name": "issue_refund", "args": {"amount": amount}},
	"tool": {"amount_arg": "amount", "irreversible": false, "affects_production": false, "bulk_operation": false},
	"context": {"untrusted_input_source": false},
}

low_threshold := json.patch(config, [{"op": "replace", "path": "/agents/a1/auto_approve_threshold", "value": 0.3}])

test_deny_negative_large_amount_counts_as_large if {
	f := risk.flags with input as refund(-100000) with data.aecl.config as config
	f == ["large_amount"]
	risk.escalate with input as refund(-100000) with data.aecl.config as low_threshold
}

test_deny_most_negative_amount_counts_as_large if {
	f := risk.flags with input as refund(-1e308) with data.aecl.config as config
	f == ["large_amount"]
	risk.escalate with input as refund(-1e308) with data.aecl.config as low_threshold
}

test_deny_amount_as_string_counts_as_large if {
	risk.escalate with input as refund("100000") with data.aecl.config as low_threshold
}

test_allow_small_negative_amount_is_not_large if {
	f := risk.flags with input as refund(-10) with data.aecl.config as config
	f == []
	not risk.escalate with input as refund(-10) with data.aecl.config as low_threshold
}

test_allow_negative_amount_at_threshold_is_not_large if {
	not risk.escalate with input as refund(-50000) with data.aecl.config as low_threshold
}

test_deny_missing_amount_counts_as_large if {
	i := json.patch(refund(1), [{"op": "remove", "path": "/action/args/amount"}])
	f := risk.flags with input as i with data.aecl.config as config
	f == ["large_amount"]
}
