package aecl.history_test

import rego.v1

import data.aecl.history

rules := {
	"amount_caps": {"transfer_funds": 250000},
	"max_repeats": {"fire_webhook": 3},
	"window_seconds": 3600,
}

transfer(amount, earlier) := {
	"action": {"name": "transfer_funds", "args": {"vendor": "V-221", "amount": amount}},
	"tool": {"access": "write", "amount_arg": "amount", "resource_arg": null},
	"resource": null,
	"task": {"history": earlier, "history_truncated": false},
	"now": 10000,
}

webhook(event, earlier) := {
	"action": {"name": "fire_webhook", "args": {"event_id": event, "payload": {}}},
	"tool": {"access": "write", "amount_arg": null, "resource_arg": "event_id"},
	"resource": event,
	"task": {"history": earlier, "history_truncated": false},
	"now": 10000,
}

paid(amount, outcome) := {"tool": "transfer_funds", "outcome": outcome, "amount": amount, "resource": null, "at": 9000}

fired(event, outcome, at) := {"tool": "fire_webhook", "outcome": outcome, "amount": null, "resource": event, "at": at}

# -- amount caps ---------------------------------------------------------------

test_allow_first_transfer_under_the_cap if {
	history.allow with input as transfer(100000, []) with data.aecl.config.history as rules
}

test_allow_transfers_adding_up_to_exactly_the_cap if {
	history.allow with input as transfer(50000, [paid(100000, "approve"), paid(100000, "escalate")])
		with data.aecl.config.history as rules
}

test_deny_transfer_over_the_cumulative_cap if {
	i := transfer(100000, [paid(100000, "approve"), paid(100000, "escalate")])
	not history.allow with input as i with data.aecl.config.history as rules
	history.rule == "history.amount_cap" with input as i with data.aecl.config.history as rules
	r := history.reason with input as i with data.aecl.config.history as rules
	r == "transfer_funds amounts in this task would reach 300000, over the cap of 250000 (200000 already approved or escalated)"
}

test_allow_blocked_transfers_do_not_count_toward_the_cap if {
	history.allow with input as transfer(100000, [paid(200000, "block"), paid(100000, "approve")])
		with data.aecl.config.history as rules
}

test_allow_other_tools_amounts_do_not_count if {
	other := {"tool": "refund", "outcome": "approve", "amount": 900000, "resource": null, "at": 1}
	history.allow with input as transfer(100000, [other]) with data.aecl.config.history as rules
}

test_deny_one_transfer_over_the_cap_alone if {
	not history.allow with input as transfer(250001, []) with data.aecl.config.history as rules
}

test_deny_capped_call_whose_amount_cannot_be_read if {
	i := transfer("a lot", [])
	not history.allow with input as i with data.aecl.config.history as rules
	history.rule == "history.amount_unreadable" with input as i with data.aecl.config.history as rules
	r := history.reason with input as i with data.aecl.config.history as rules
	contains(r, "cannot be read")
}

test_allow_uncapped_tool if {
	history.allow with input as transfer(1000000000, [paid(1000000000, "approve")])
		with data.aecl.config.history as {}
}

# -- repeats -------------------------------------------------------------------

test_allow_third_identical_call if {
	history.allow with input as webhook("evt-1", [fired("evt-1", "approve", 9000), fired("evt-1", "approve", 9100)])
		with data.aecl.config.history as rules
}

test_deny_fourth_identical_call if {
	earlier := [fired("evt-1", "approve", 9000), fired("evt-1", "escalate", 9100), fired("evt-1", "approve", 9200)]
	i := webhook("evt-1", earlier)
	not history.allow with input as i with data.aecl.config.history as rules
	history.rule == "history.max_repeats" with input as i with data.aecl.config.history as rules
	r := history.reason with input as i with data.aecl.config.history as rules
	r == "fire_webhook on 'evt-1' already made 3 times in this task (at most 3 within 3600 seconds)"
}

test_allow_same_tool_on_another_resource if {
	earlier := [fired("evt-1", "approve", 9000), fired("evt-1", "approve", 9100), fired("evt-1", "approve", 9200)]
	history.allow with input as webhook("evt-2", earlier) with data.aecl.config.history as rules
}

test_allow_blocked_calls_are_not_repeats if {
	earlier := [fired("evt-1", "block", 9000), fired("evt-1", "approve", 9100), fired("evt-1", "approve", 9200)]
	history.allow with input as webhook("evt-1", earlier) with data.aecl.config.history as rules
}

test_allow_calls_outside_the_window_are_not_repeats if {
	earlier := [fired("evt-1", "approve", 6400), fired("evt-1", "approve", 9100), fired("evt-1", "approve", 9200)]
	history.allow with input as webhook("evt-1", earlier) with data.aecl.config.history as rules
}

test_deny_window_defaults_to_an_hour if {
	earlier := [fired("evt-1", "approve", 6401), fired("evt-1", "approve", 9100), fired("evt-1", "approve", 9200)]
	not history.allow with input as webhook("evt-1", earlier)
		with data.aecl.config.history as {"max_repeats": {"fire_webhook": 3}}
}

# N is how many calls there may be: the (N+1)th is blocked, so 0 allows none.
test_deny_zero_repeats_allows_no_call if {
	cfg := {"max_repeats": {"fire_webhook": 0}}
	not history.allow with input as webhook("evt-1", []) with data.aecl.config.history as cfg
	history.allow with input as webhook("evt-1", []) with data.aecl.config.history as {"max_repeats": {"fire_webhook": 1}}
	not history.allow with input as webhook("evt-1", [fired("evt-1", "approve", 9000)])
		with data.aecl.config.history as {"max_repeats": {"fire_webhook": 1}}
}

test_deny_repeats_of_a_tool_without_a_resource if {
	send := {"tool": "send_email", "outcome": "approve", "amount": null, "resource": null, "at": 9000}
	i := {
		"action": {"name": "send_email", "args": {}},
		"tool": {"access": "write", "amount_arg": null, "resource_arg": null},
		"resource": null,
		"task": {"history": [send, send]},
		"now": 10000,
	}
	cfg := {"max_repeats": {"send_email": 2}}
	not history.allow with input as i with data.aecl.config.history as cfg
	r := history.reason with input as i with data.aecl.config.history as cfg
	r == "send_email already made 2 times in this task (at most 2 within 3600 seconds)"
}

# -- a history the input does not carry whole ------------------------------------

test_deny_rule_tool_when_the_history_is_truncated if {
	i := json.patch(webhook("evt-1", []), [{"op": "replace", "path": "/task/history_truncated", "value": true}])
	not history.allow with input as i with data.aecl.config.history as rules
	history.rule == "history.history_truncated" with input as i with data.aecl.config.history as rules
	r := history.reason with input as i with data.aecl.config.history as rules
	contains(r, "'fire_webhook' has a history rule")
}

test_allow_other_tools_when_the_history_is_truncated if {
	i := {
		"action": {"name": "read_invoice", "args": {}},
		"tool": {"access": "read"},
		"task": {"history": [], "history_truncated": true},
		"now": 10000,
	}
	history.allow with input as i with data.aecl.config.history as rules
}

test_allow_an_input_without_history_or_rules if {
	history.allow with input as {"action": {"name": "fire_webhook", "args": {}}, "tool": {}, "task": {}, "now": 1}
		with data.aecl.config as {}
}
