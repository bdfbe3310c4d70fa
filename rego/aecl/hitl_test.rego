package aecl.hitl_test

import rego.v1

import data.aecl.hitl

config := {
	"risk": {
		"amount_threshold": 50000,
		"weights": {
			"large_amount": 0.5, "irreversible": 0.3, "affects_production": 0.4,
			"bulk_operation": 0.3, "untrusted_input": 0.2,
		},
	},
	"hitl": {
		"routes": {
			"transfer_funds": 3600, "bulk_data_export": 14400,
			"deploy_to_production": 7200, "modify_iam_policy": 3600,
		},
		"risk_floor": 0.7, "risk_floor_ttl_seconds": 3600, "default_ttl_seconds": 1800,
	},
}

plain := {"access": "write", "irreversible": false, "affects_production": false, "bulk_operation": false}

call(name, tool, untrusted) := {
	"agent_id": "a1",
	"action": {"name": name, "args": {}},
	"tool": tool,
	"context": {"untrusted_input_source": untrusted},
}

test_escalate_routed_action_with_its_expiry if {
	hitl.escalate with input as call("deploy_to_production", plain, false) with data.aecl.config as config
	t := hitl.ttl with input as call("deploy_to_production", plain, false) with data.aecl.config as config
	t == 7200
	r := hitl.rule with input as call("deploy_to_production", plain, false) with data.aecl.config as config
	r == "hitl.route"
}

test_escalate_bulk_data_export_four_hours if {
	t := hitl.ttl with input as call("bulk_data_export", plain, false) with data.aecl.config as config
	t == 14400
}

test_escalate_risk_above_floor if {
	prod_bulk := object.union(plain, {"affects_production": true, "bulk_operation": true})
	i := call("resize_cluster", prod_bulk, true)
	hitl.escalate with input as i with data.aecl.config as config
	r := hitl.rule with input as i with data.aecl.config as config
	r == "hitl.risk_floor"
	reason := hitl.reason with input as i with data.aecl.config as config
	reason == "risk score 0.9 is above the approval floor 0.7"
}

test_allow_risk_at_floor if {
	# 0.4 + 0.3 = 0.7 is not above the floor.
	prod_irrev := object.union(plain, {"affects_production": true, "irreversible": true, "compensating_action": "undo"})
	not hitl.escalate with input as call("resize_cluster", prod_irrev, false) with data.aecl.config as config
}

test_escalate_irreversible_without_compensation if {
	i := call("drop_table", object.union(plain, {"irreversible": true}), false)
	hitl.escalate with input as i with data.aecl.config as config
	r := hitl.rule with input as i with data.aecl.config as config
	r == "hitl.irreversible_uncompensated"
	t := hitl.ttl with input as i with data.aecl.config as config
	t == 1800
}

test_allow_irreversible_with_compensation if {
	i := call("drop_table", object.union(plain, {"irreversible": true, "compensating_action": "restore_table"}), false)
	not hitl.escalate with input as i with data.aecl.config as config
}

test_escalate_strictest_expiry_wins if {
	# Routed for 4 h, but irreversible without compensation (30 min) too.
	i := call("bulk_data_export", object.union(plain, {"irreversible": true}), false)
	t := hitl.ttl with input as i with data.aecl.config as config
	t == 1800
	r := hitl.reason with input as i with data.aecl.config as config
	r == "action 'bulk_data_export' always requires approval; tool 'bulk_data_export' is irreversible and has no compensating action"
}

test_allow_plain_action if {
	not hitl.escalate with input as call("read_invoice", plain, false) with data.aecl.config as config
}

test_allow_default_expiry_without_configuration if {
	t := hitl.ttl_for_other_gates with input as call("x", plain, false) with data.aecl.config as {}
	t == 3600
}

test_escalate_irreversible_when_the_registry_sends_a_null_compensation if {
	i := call("send_email", object.union(plain, {"irreversible": true, "compensating_action": null}), false)
	hitl.escalate with input as i with data.aecl.config as config
	r := hitl.rule with input as i with data.aecl.config as config
	r == "hitl.irreversible_uncompensated"
}
