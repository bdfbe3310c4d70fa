package aecl.main_test

import rego.v1

import data.aecl.main

config := {
	"agents": {"finance_agent_v2": {
		"agent_id": "finance_agent_v2",
		"allowed_actions": ["read_invoice", "generate_payment_report"],
		"blocked_actions": ["delete_record"],
		"context_rules": {"transfer_funds": "requires_human_approval"},
		"max_tool_calls_per_run": 50,
		"auto_approve_threshold": 0.6,
	}},
	"risk": {
		"amount_threshold": 50000,
		"weights": {
			"large_amount": 0.5, "irreversible": 0.3, "affects_production": 0.4,
			"bulk_operation": 0.3, "untrusted_input": 0.2,
		},
	},
	"hitl": {
		"routes": {"transfer_funds": 3600, "modify_iam_policy": 3600},
		"risk_floor": 0.7, "risk_floor_ttl_seconds": 3600, "default_ttl_seconds": 3600,
	},
}

# The shipped gates are tested on their own: an operator's extensions (which
# may block or escalate more) do not change what these tests expect.
no_extensions := {}

read_tool := {"access": "read", "irreversible": false, "affects_production": false, "bulk_operation": false}

transfer_tool := {
	"access": "write", "irreversible": true, "affects_production": true,
	"bulk_operation": false, "amount_arg": "amount",
}

call(agent, name, tool, args, untrusted, calls) := {
	"agent_id": agent,
	"action": {"name": name, "args": args},
	"tool": tool,
	"context": {"untrusted_input_source": untrusted, "triggering_input": ""},
	"task": {
		"declared_goal": "pay vendor invoices: transfer funds",
		"declared_actions": [], "calls_so_far": calls, "expires_at": 2000,
	},
	"now": 1000,
}

test_allow_read_invoice if {
	d := main.decision with input as call("finance_agent_v2", "read_invoice", read_tool, {}, false, 0)
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "approve"
	d.approval_ttl_seconds == 0
}

test_allow_read_invoice_by_the_agent_itself if {
	c := object.union(
		call("finance_agent_v2", "read_invoice", read_tool, {}, false, 0),
		{"principal": {"kind": "agent", "id": "finance_agent_v2"}},
	)
	d := main.decision with input as c
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "approve"
}

test_deny_a_call_made_by_another_principal_before_any_other_gate if {
	c := object.union(
		call("finance_agent_v2", "read_invoice", read_tool, {}, false, 0),
		{"principal": {"kind": "agent", "id": "rogue_agent"}},
	)
	d := main.decision with input as c
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.gate == "identity"
	d.rule == "identity.principal_mismatch"
}

test_deny_blocked_action if {
	d := main.decision with input as call("finance_agent_v2", "delete_record", read_tool, {}, false, 0)
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.gate == "allowlist"
}

test_deny_unknown_agent if {
	d := main.decision with input as call("ghost", "read_invoice", read_tool, {}, false, 0)
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.reason == "unknown agent 'ghost'"
}

test_deny_fifty_first_call if {
	d := main.decision with input as call("finance_agent_v2", "read_invoice", read_tool, {}, false, 50)
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.gate == "limits"
}

test_deny_write_outside_intent if {
	i := call("finance_agent_v2", "generate_payment_report", object.union(read_tool, {"access": "write"}), {}, false, 0)
	d := main.decision with input as i with data.aecl.config as config
	d.outcome == "block"
	d.gate == "intent"
}

test_escalate_large_untrusted_transfer if {
	d := main.decision with input as call("finance_agent_v2", "transfer_funds", transfer_tool, {"amount": 100000}, true, 0)
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "escalate"
	d.gate == "context_rules"
	d.risk_score >= 0.7
	d.approval_ttl_seconds == 3600
	"untrusted_input" in d.risk_flags
}

test_escalate_on_risk_alone if {
	# object.union merges recursively, so the agents object is replaced whole.
	agent := {"allowed_actions": ["generate_payment_report"], "context_rules": {}, "auto_approve_threshold": 0.3}
	cfg := json.patch(config, [{"op": "replace", "path": "/agents", "value": {"finance_agent_v2": agent}}])
	prod := object.union(read_tool, {"access": "write", "affects_production": true})
	i := object.union(
		call("finance_agent_v2", "generate_payment_report", prod, {}, false, 0),
		{"task": {"declared_goal": "generate payment report"}},
	)
	d := main.decision with input as i with data.aecl.config as cfg
	d.outcome == "escalate"
	d.gate == "risk"
	d.rule == "risk.over_threshold"
	d.risk_weights == {"affects_production": 0.4}
	d.approval_ttl_seconds == 3600
}

test_escalate_hitl_route_when_no_context_rule if {
	agent := {"allowed_actions": ["transfer_funds"], "context_rules": {}, "auto_approve_threshold": 0.9}
	cfg := json.patch(config, [{"op": "replace", "path": "/agents", "value": {"finance_agent_v2": agent}}])
	d := main.decision with input as call("finance_agent_v2", "transfer_funds", transfer_tool, {"amount": 10}, false, 0)
		with data.aecl.config as cfg
		with data.aecl.extensions as no_extensions
	d.outcome == "escalate"
	d.gate == "hitl"
	d.rule == "hitl.route"
	d.approval_ttl_seconds == 3600
}

test_escalate_explains_context_rule if {
	d := main.decision with input as call("finance_agent_v2", "transfer_funds", transfer_tool, {"amount": 100000}, true, 0)
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.rule == "context_rules.requires_human_approval"
	d.risk_weights == {"large_amount": 0.5, "irreversible": 0.3, "affects_production": 0.4, "untrusted_input": 0.2}
}

test_deny_explains_blocking_rule if {
	d := main.decision with input as call("finance_agent_v2", "delete_record", read_tool, {}, false, 0)
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.rule == "allowlist.blocked"
	d.approval_ttl_seconds == 0
}

test_deny_without_configuration if {
	d := main.decision with input as call("finance_agent_v2", "read_invoice", read_tool, {}, false, 0)
		with data.aecl.config as {}
	d.outcome == "block"
}

test_deny_declared_path_escaping_its_root if {
	agent := {"allowed_actions": ["save_report"], "context_rules": {}, "auto_approve_threshold": 0.6}
	cfg := json.patch(config, [{"op": "replace", "path": "/agents", "value": {"finance_agent_v2": agent}}])
	save := object.union(read_tool, {"access": "write", "path_args": ["path"]})
	raw := "reports/..%2f..%2fetc%2fpasswd"
	i := object.union(
		call("finance_agent_v2", "save_report", save, {"path": raw}, false, 0),
		{
			"task": {"declared_goal": "save report"},
			"paths": {"path": {"raw": raw, "normalized": "../etc/passwd", "absolute": false, "escapes_root": true}},
		},
	)
	d := main.decision with input as i with data.aecl.config as cfg
	d.outcome == "block"
	d.gate == "paths"
	d.rule == "paths.escapes_root"
	ok := object.union(i, {"paths": {"path": {"normalized": "etc/passwd", "escapes_root": false}}})
	a := main.decision with input as ok with data.aecl.config as cfg
	a.outcome == "approve"
}

# -- operator extensions (data.aecl.extensions.<name>.deny / .escalate) --------

read_call := call("finance_agent_v2", "read_invoice", read_tool, {}, false, 0)

test_deny_extension_deny_blocks_an_otherwise_approved_call if {
	d := main.decision with input as read_call
		with data.aecl.config as config
		with data.aecl.extensions as {"vendors": {"deny": {"vendor is not verified"}}}
	d.outcome == "block"
	d.gate == "extensions"
	d.rule == "extensions.vendors.deny"
	d.reason == "vendor is not verified"
}

test_deny_extension_deny_wins_over_an_escalation if {
	d := main.decision with input as call("finance_agent_v2", "transfer_funds", transfer_tool, {"amount": 10}, false, 0)
		with data.aecl.config as config
		with data.aecl.extensions as {"caps": {"deny": {"over the agent's cap"}}}
	d.outcome == "block"
	d.rule == "extensions.caps.deny"
}

test_deny_builtin_blocks_come_before_extensions if {
	d := main.decision with input as call("finance_agent_v2", "delete_record", read_tool, {}, false, 0)
		with data.aecl.config as config
		with data.aecl.extensions as {"caps": {"deny": {"x"}}}
	d.gate == "allowlist"
}

test_deny_the_first_extension_by_name_then_reason_decides if {
	d := main.decision with input as read_call
		with data.aecl.config as config
		with data.aecl.extensions as {"zeta": {"deny": {"a"}}, "alpha": {"deny": {"z", "b"}}}
	d.rule == "extensions.alpha.deny"
	d.reason == "b"
}

test_deny_a_malformed_extension_blocks_every_call if {
	d := main.decision with input as read_call
		with data.aecl.config as config
		with data.aecl.extensions as {"broken": {"deny": true}}
	d.outcome == "block"
	d.rule == "extensions.malformed"
	contains(d.reason, "broken")
}

test_deny_an_extension_reason_that_is_not_a_string_blocks if {
	d := main.decision with input as read_call
		with data.aecl.config as config
		with data.aecl.extensions as {"broken": {"escalate": {1}}}
	d.rule == "extensions.malformed"
}

test_deny_extension_escalate_sends_a_call_to_a_human if {
	d := main.decision with input as read_call
		with data.aecl.config as config
		with data.aecl.extensions as {"vendors": {"escalate": {"first payment to this vendor"}}}
	d.outcome == "escalate"
	d.rule == "extensions.vendors.escalate"
	d.approval_ttl_seconds == 3600
}

test_allow_an_extension_with_nothing_to_say_changes_nothing if {
	d := main.decision with input as read_call
		with data.aecl.config as config
		with data.aecl.extensions as {"vendors": {"deny": set(), "helper": 1}}
	d.outcome == "approve"
}

# -- scopes, declared resources and the task's history ----------------------------

webhook_tool := object.union(read_tool, {"access": "write", "resource_arg": "event_id"})

history_config := object.union(config, {
	"agents": {"finance_agent_v2": {"allowed_actions": ["fire_webhook", "transfer_funds"], "credential_scope": ["payments:initiate"]}},
	"connectors": {"payments": {"scope": "payments:initiate"}, "hooks": {"scope": "webhooks:fire"}},
	"history": {"amount_caps": {"transfer_funds": 250000}, "max_repeats": {"fire_webhook": 3}, "window_seconds": 3600},
})

fire(event, earlier, declared) := object.union(
	call("finance_agent_v2", "fire_webhook", webhook_tool, {"event_id": event}, false, count(earlier)),
	{
		"resource": event,
		"task": {"declared_actions": ["fire_webhook"], "declared_resources": declared, "history": earlier},
	},
)

fired(event) := {"tool": "fire_webhook", "outcome": "approve", "amount": null, "resource": event, "at": 990}

test_allow_third_webhook_for_one_event if {
	d := main.decision with input as fire("evt-1", [fired("evt-1"), fired("evt-1")], [])
		with data.aecl.config as history_config
		with data.aecl.extensions as no_extensions
	d.outcome == "approve"
}

test_deny_fourth_webhook_for_one_event_at_the_history_gate if {
	d := main.decision with input as fire("evt-1", [fired("evt-1"), fired("evt-1"), fired("evt-1")], [])
		with data.aecl.config as history_config
		with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.gate == "history"
	d.rule == "history.max_repeats"
	d.reason == "fire_webhook on 'evt-1' already made 3 times in this task (at most 3 within 3600 seconds)"
}

test_deny_transfer_over_the_task_cap_before_it_escalates if {
	paid := {"tool": "transfer_funds", "outcome": "escalate", "amount": 200000, "resource": null, "at": 990}
	i := object.union(
		call("finance_agent_v2", "transfer_funds", transfer_tool, {"amount": 100000}, false, 1),
		{"task": {"history": [paid]}},
	)
	d := main.decision with input as i with data.aecl.config as history_config with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.gate == "history"
	d.rule == "history.amount_cap"
	alone := main.decision with input as object.union(i, {"task": {"history": []}})
		with data.aecl.config as history_config
		with data.aecl.extensions as no_extensions
	alone.outcome == "escalate"
}

test_deny_write_outside_declared_resources_at_the_intent_gate if {
	d := main.decision with input as fire("evt-2", [], ["evt-1"])
		with data.aecl.config as history_config
		with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.gate == "intent"
	d.rule == "intent.outside_declared_resources"
}

test_deny_tool_whose_connector_scope_the_agent_lacks if {
	hooked := object.union(webhook_tool, {"connectors": ["hooks"]})
	i := object.union(fire("evt-1", [], []), {"tool": hooked})
	d := main.decision with input as i with data.aecl.config as history_config with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.gate == "scope"
	d.rule == "scope.missing_scope"
	contains(d.reason, "connector 'hooks'")
	contains(d.reason, "'webhooks:fire'")
	paying := object.union(webhook_tool, {"connectors": ["payments"]})
	ok := main.decision with input as object.union(i, {"tool": paying})
		with data.aecl.config as history_config
		with data.aecl.extensions as no_extensions
	ok.outcome == "approve"
}

# -- an approved call, decided again when the service runs it ----------------

approval := {
	"approval_id": "apr_1", "status": "approved", "tool": "transfer_funds",
	"approver": {"kind": "approver", "id": "alice"}, "rule": "context_rules.requires_human_approval",
}

approved_transfer := object.union(
	call("finance_agent_v2", "transfer_funds", transfer_tool, {"amount": 100000}, true, 1),
	{"approval": approval},
)

test_allow_an_approved_escalation_when_the_service_runs_it if {
	d := main.decision with input as approved_transfer
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "approve"
	d.gate == "hitl"
	d.rule == "hitl.approved"
	d.reason == "approved by alice (approval apr_1), escalated first by context_rules.requires_human_approval"
}

test_deny_a_block_wins_over_an_approval if {
	d := main.decision with input as object.union(approved_transfer, {"task": {"calls_so_far": 50}})
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.gate == "limits"
}

test_escalate_still_when_the_approval_is_for_another_tool if {
	other := object.union(approval, {"tool": "deploy_to_production"})
	d := main.decision with input as object.union(approved_transfer, {"approval": other})
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "escalate"
}

test_escalate_still_when_the_approval_is_not_by_an_approver if {
	by_agent := object.union(approval, {"approver": {"kind": "agent", "id": "finance_agent_v2"}})
	d := main.decision with input as object.union(approved_transfer, {"approval": by_agent})
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "escalate"
}

test_escalate_still_while_the_approval_is_pending if {
	pending := object.union(approval, {"status": "pending"})
	d := main.decision with input as object.union(approved_transfer, {"approval": pending})
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "escalate"
}

# -- compensations (the rollback engine undoing an execution of the task) ------

reverse_tool := {
	"access": "write", "irreversible": true, "affects_production": true,
	"bulk_operation": false, "compensating_action": null,
}

compensation(agent, name, calls) := object.union(
	call(agent, name, reverse_tool, {"transfer_id": "tr_1"}, false, calls),
	{"compensation": {"of": "dec_1", "tool": "transfer_funds"}},
)

test_allow_a_compensation_the_agent_may_not_call_itself if {
	d := main.decision with input as compensation("finance_agent_v2", "delete_record", 0)
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "approve"
	d.rule == "rollback.compensation"
	d.reason == "compensation of dec_1 (transfer_funds): every blocking gate passed"
}

test_allow_a_compensation_after_the_budget_and_without_a_human if {
	d := main.decision with input as compensation("finance_agent_v2", "reverse_transfer", 50)
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "approve"
	"irreversible" in d.risk_flags
}

test_deny_a_compensation_by_an_agent_that_may_not_roll_back if {
	no_rollback := object.union(config, {"agents": {"finance_agent_v2": {"may_roll_back": false}}})
	d := main.decision with input as compensation("finance_agent_v2", "reverse_transfer", 0)
		with data.aecl.config as no_rollback
		with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.rule == "allowlist.rollback_not_allowed"
	d.reason == "agent 'finance_agent_v2' may not roll back (may_roll_back: false)"
}

test_deny_a_compensation_of_an_unknown_agent if {
	d := main.decision with input as compensation("rogue", "reverse_transfer", 0)
		with data.aecl.config as config
		with data.aecl.extensions as no_extensions
	d.outcome == "block"
	d.rule == "allowlist.unknown_agent"
}

test_escalate_a_compensation_an_extension_escalates if {
	ext := {"careful": {"escalate": {"rollbacks of payments need a second look"}}}
	d := main.decision with input as compensation("finance_agent_v2", "reverse_transfer", 0)
		with data.aecl.config as config
		with data.aecl.extensions as ext
	d.outcome == "escalate"
	d.gate == "extensions"
}
