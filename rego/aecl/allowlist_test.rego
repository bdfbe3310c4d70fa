package aecl.allowlist_test

import rego.v1

import data.aecl.allowlist

agents := {"a1": {
	"agent_id": "a1",
	"allowed_actions": ["read_invoice", "delete_record"],
	"blocked_actions": ["delete_record"],
	"context_rules": {"transfer_funds": "requires_human_approval"},
}}

test_allow_listed_action if {
	allowlist.allow with input as {"agent_id": "a1", "action": {"name": "read_invoice"}}
		with data.aecl.config.agents as agents
}

test_allow_action_under_context_rule if {
	allowlist.allow with input as {"agent_id": "a1", "action": {"name": "transfer_funds"}}
		with data.aecl.config.agents as agents
}

test_deny_unknown_agent if {
	not allowlist.allow with input as {"agent_id": "ghost", "action": {"name": "read_invoice"}}
		with data.aecl.config.agents as agents
	r := allowlist.reason with input as {"agent_id": "ghost", "action": {"name": "read_invoice"}}
		with data.aecl.config.agents as agents
	r == "unknown agent 'ghost'"
}

test_deny_block_wins_over_allow if {
	not allowlist.allow with input as {"agent_id": "a1", "action": {"name": "delete_record"}}
		with data.aecl.config.agents as agents
	r := allowlist.reason with input as {"agent_id": "a1", "action": {"name": "delete_record"}}
		with data.aecl.config.agents as agents
	contains(r, "block list")
}

test_deny_action_on_no_list if {
	not allowlist.allow with input as {"agent_id": "a1", "action": {"name": "bulk_export"}}
		with data.aecl.config.agents as agents
	r := allowlist.reason with input as {"agent_id": "a1", "action": {"name": "bulk_export"}}
		with data.aecl.config.agents as agents
	contains(r, "no allow list")
}

test_deny_explains_each_rule if {
	unknown := allowlist.rule with input as {"agent_id": "ghost", "action": {"name": "read_invoice"}}
		with data.aecl.config.agents as agents
	unknown == "allowlist.unknown_agent"
	blocked := allowlist.rule with input as {"agent_id": "a1", "action": {"name": "delete_record"}}
		with data.aecl.config.agents as agents
	blocked == "allowlist.blocked"
	unlisted := allowlist.rule with input as {"agent_id": "a1", "action": {"name": "launch"}}
		with data.aecl.config.agents as agents
	unlisted == "allowlist.not_permitted"
}
