package aecl.intent_test

import rego.v1

import data.aecl.intent

call(name, access, goal, declared) := {
	"action": {"name": name},
	"tool": {"access": access},
	"task": {"declared_goal": goal, "declared_actions": declared},
}

test_allow_read_outside_scope if {
	intent.allow with input as call("read_invoice", "read", "", ["transfer_funds"])
}

test_allow_write_in_declared_actions if {
	intent.allow with input as call("transfer_funds", "write", "", ["transfer_funds"])
}

test_allow_write_named_in_goal_as_words if {
	intent.allow with input as call("transfer_funds", "write", "Transfer funds to vendor 42", [])
}

test_allow_write_named_in_goal_as_identifier if {
	intent.allow with input as call("transfer_funds", "write", "run transfer_funds for INV-1", [])
}

test_deny_write_outside_declared_actions if {
	not intent.allow with input as call("delete_record", "write", "delete record", ["transfer_funds"])
	r := intent.reason with input as call("delete_record", "write", "delete record", ["transfer_funds"])
	startswith(r, "Action scope exceeds declared task intent")
}

test_deny_write_not_in_goal if {
	not intent.allow with input as call("transfer_funds", "write", "summarise invoices", [])
	r := intent.reason with input as call("transfer_funds", "write", "summarise invoices", [])
	startswith(r, "Action scope exceeds declared task intent")
}

test_deny_unknown_access_kind if {
	not intent.allow with input as call("x", "admin", "x", [])
}

test_deny_explains_each_rule if {
	scoped := intent.rule with input as call("transfer_funds", "write", "", ["read_invoice"])
	scoped == "intent.outside_declared_actions"
	goal := intent.rule with input as call("transfer_funds", "write", "read invoices", [])
	goal == "intent.not_in_declared_goal"
}
