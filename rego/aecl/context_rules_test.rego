package aecl.context_rules_test

import rego.v1

import data.aecl.context_rules

agents := {"a1": {"context_rules": {
	"transfer_funds": "requires_human_approval",
	"bulk_export": "requires_data_owner_consent",
}}}

test_escalate_requires_human_approval if {
	context_rules.escalate with input as {"agent_id": "a1", "action": {"name": "transfer_funds"}}
		with data.aecl.config.agents as agents
	r := context_rules.reason with input as {"agent_id": "a1", "action": {"name": "transfer_funds"}}
		with data.aecl.config.agents as agents
	r == "context rule 'requires_human_approval' applies to action 'transfer_funds'"
}

test_escalate_any_other_rule if {
	r := context_rules.reason with input as {"agent_id": "a1", "action": {"name": "bulk_export"}}
		with data.aecl.config.agents as agents
	contains(r, "requires_data_owner_consent")
}

test_allow_action_without_rule if {
	not context_rules.escalate with input as {"agent_id": "a1", "action": {"name": "read_invoice"}}
		with data.aecl.config.agents as agents
}

test_escalate_explains_rule_name if {
	r := context_rules.rule_name with input as {"agent_id": "a1", "action": {"name": "bulk_export"}}
		with data.aecl.config.agents as agents
	r == "context_rules.requires_data_owner_consent"
}
