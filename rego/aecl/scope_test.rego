package aecl.scope_test

import rego.v1

import data.aecl.scope

config := {
	"agents": {
		"payer": {"credential_scope": ["invoices:read", "payments:initiate"]},
		"reader": {"credential_scope": ["invoices:read"]},
	},
	"connectors": {
		"payments": {"scope": "payments:initiate"},
		"records": {"scope": "records:write"},
	},
}

call(agent, connectors) := {
	"agent_id": agent,
	"action": {"name": "transfer_funds", "args": {}},
	"tool": {"access": "write", "connectors": connectors},
}

test_allow_agent_holding_the_connectors_scope if {
	scope.allow with input as call("payer", ["payments"]) with data.aecl.config as config
}

test_allow_tool_without_connectors if {
	scope.allow with input as call("reader", []) with data.aecl.config as config
	scope.allow with input as {"agent_id": "reader", "action": {"name": "read_invoice"}, "tool": {"access": "read"}}
		with data.aecl.config as config
}

test_deny_agent_lacking_the_connectors_scope if {
	i := call("reader", ["payments"])
	not scope.allow with input as i with data.aecl.config as config
	scope.rule == "scope.missing_scope" with input as i with data.aecl.config as config
	r := scope.reason with input as i with data.aecl.config as config
	r == "tool 'transfer_funds' uses connector 'payments', which needs scope 'payments:initiate': not in the credential_scope of agent 'reader'"
}

test_deny_names_the_first_missing_connector if {
	r := scope.reason with input as call("reader", ["records", "payments"]) with data.aecl.config as config
	contains(r, "connector 'payments'")
}

test_deny_one_missing_scope_among_several if {
	not scope.allow with input as call("payer", ["payments", "records"]) with data.aecl.config as config
}

test_deny_unknown_connector if {
	i := call("payer", ["mainframe"])
	not scope.allow with input as i with data.aecl.config as config
	scope.rule == "scope.unknown_connector" with input as i with data.aecl.config as config
	r := scope.reason with input as i with data.aecl.config as config
	r == "tool 'transfer_funds' uses connector 'mainframe', which is not configured"
}

test_deny_agent_without_a_manifest if {
	not scope.allow with input as call("ghost", ["payments"]) with data.aecl.config as config
}

test_deny_without_connector_configuration if {
	not scope.allow with input as call("payer", ["payments"])
		with data.aecl.config as {"agents": config.agents}
}
