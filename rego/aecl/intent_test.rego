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

test_allow_goal_naming_the_action_in_other_words if {
	intent.allow with input as call("generate_payment_report", "write", "Please generate a payment report", [])
}

test_allow_goal_words_in_any_order_and_case if {
	intent.allow with input as call("generate_payment_report", "write", "REPORT on payments? No: Payment report, generate it", [])
}

test_allow_goal_with_punctuation_between_words if {
	intent.allow with input as call("transfer_funds", "write", "Pay vendor invoices: read invoices, transfer-funds.", [])
}

test_allow_action_filler_words_are_not_required if {
	intent.allow with input as call("send_to_vendor", "write", "send the vendor their invoice", [])
}

test_deny_goal_missing_one_of_the_words if {
	not intent.allow with input as call("generate_payment_report", "write", "generate a report", [])
}

test_deny_goal_with_a_word_only_inside_another if {
	not intent.allow with input as call("generate_payment_report", "write", "regenerate payment reports", [])
}

test_deny_empty_goal if {
	not intent.allow with input as call("transfer_funds", "write", "", [])
}

test_deny_action_of_filler_words_needs_them_all if {
	not intent.allow with input as call("to_the", "write", "go to it", [])
	intent.allow with input as call("to_the", "write", "the way to", [])
}

test_deny_declared_actions_stay_precise if {
	not intent.allow with input as call("generate_payment_report", "write", "generate payment report", ["read_invoice"])
}

# -- declared resources ----------------------------------------------------------

update(resource, declared) := {
	"action": {"name": "update_record", "args": {"record_id": resource}},
	"tool": {"access": "write", "resource_arg": "record_id"},
	"resource": resource,
	"task": {"declared_goal": "", "declared_actions": ["update_record"], "declared_resources": declared},
}

test_allow_write_to_a_declared_resource if {
	intent.allow with input as update("INV-1001", ["INV-1001", "INV-1003"])
}

test_allow_any_resource_when_none_declared if {
	intent.allow with input as update("INV-1002", [])
}

test_allow_input_without_declared_resources if {
	i := json.remove(update("INV-1002", []), ["task/declared_resources"])
	intent.allow with input as i
}

test_allow_read_of_an_undeclared_resource if {
	i := json.patch(update("INV-1002", ["INV-1001"]), [{"op": "replace", "path": "/tool/access", "value": "read"}])
	intent.allow with input as i
}

test_allow_tool_without_a_resource_argument if {
	i := json.patch(update("INV-1002", ["INV-1001"]), [{"op": "replace", "path": "/tool/resource_arg", "value": null}])
	intent.allow with input as i
}

test_deny_write_outside_declared_resources if {
	i := update("INV-1002", ["INV-1001", "INV-1003"])
	not intent.allow with input as i
	intent.rule == "intent.outside_declared_resources" with input as i
	r := intent.reason with input as i
	r == "Action touches resource 'INV-1002' outside the task's declared resources [\"INV-1001\", \"INV-1003\"]"
}

test_deny_resources_match_exactly if {
	not intent.allow with input as update("inv-1001", ["INV-1001"])
	not intent.allow with input as update("INV-1001 ", ["INV-1001"])
}

test_deny_write_naming_no_resource if {
	i := update(null, ["INV-1001"])
	not intent.allow with input as i
	intent.rule == "intent.outside_declared_resources" with input as i
	r := intent.reason with input as i
	r == "Action names no resource (argument 'record_id') but the task declared resources [\"INV-1001\"]"
}

test_deny_undeclared_action_is_named_before_its_resource if {
	i := json.patch(update("INV-1002", ["INV-1001"]), [{"op": "replace", "path": "/task/declared_actions", "value": ["create_record"]}])
	intent.rule == "intent.outside_declared_actions" with input as i
}
