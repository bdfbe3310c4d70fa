package aecl.extensions.vendors_test

import rego.v1

import data.aecl.extensions.vendors

transfer(agent, vendor, amount) := {
	"agent_id": agent,
	"action": {"name": "transfer_funds", "args": {"vendor": vendor, "amount": amount}},
}

test_allow_a_verified_vendor_under_the_cap if {
	count(vendors.deny) == 0 with input as transfer("finance_agent_v2", "V-17", 1000)
}

test_allow_exactly_the_cap if {
	count(vendors.deny) == 0 with input as transfer("finance_agent_v2", "V-42", 250000)
}

test_deny_an_unverified_vendor if {
	some reason in vendors.deny with input as transfer("finance_agent_v2", "V-221", 1000)
	reason == "vendor 'V-221' is not on the list of verified vendors"
}

test_deny_a_transfer_naming_no_vendor if {
	some reason in vendors.deny with input as {
		"agent_id": "finance_agent_v2",
		"action": {"name": "transfer_funds", "args": {"amount": 1000}},
	}
	contains(reason, "not on the list of verified vendors")
}

test_deny_an_amount_over_the_agents_cap if {
	some reason in vendors.deny with input as transfer("finance_agent_v2", "V-17", 250001)
	contains(reason, "per-transfer cap")
}

test_deny_an_agent_without_a_cap if {
	some reason in vendors.deny with input as transfer("intern_agent", "V-17", 1)
	contains(reason, "has no transfer cap")
}

test_allow_other_tools_untouched if {
	count(vendors.deny) == 0 with input as {"agent_id": "x", "action": {"name": "read_invoice", "args": {"vendor": "V-221"}}}
}
