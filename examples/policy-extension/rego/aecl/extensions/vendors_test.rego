package aecl.extensions.vendors_test

import rego.v1

import data.aecl.extensions.vendors

transfer(agent, account, amount) := {
	"agent_id": agent,
	"action": {"name": "transfer_funds", "args": {"to_account": account, "amount": amount}},
}

test_allow_a_verified_account_under_the_cap if {
	count(vendors.deny) == 0 with input as transfer("finance_agent_v2", "DE89370400440532013000", 1000)
}

test_deny_an_unverified_account if {
	some reason in vendors.deny with input as transfer("finance_agent_v2", "GB00EVIL0000000000", 1000)
	contains(reason, "not on the list of verified vendors")
}

test_deny_an_amount_over_the_agents_cap if {
	some reason in vendors.deny with input as transfer("finance_agent_v2", "DE89370400440532013000", 300000)
	contains(reason, "per-transfer cap")
}

test_deny_an_agent_without_a_cap if {
	some reason in vendors.deny with input as transfer("intern_agent", "DE89370400440532013000", 1)
	contains(reason, "has no transfer cap")
}

test_allow_other_tools_untouched if {
	count(vendors.deny) == 0 with input as {"agent_id": "x", "action": {"name": "read_invoice", "args": {}}}
}
