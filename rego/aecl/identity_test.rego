package aecl.identity_test

import rego.v1

import data.aecl.identity

test_allow_without_a_principal if {
	identity.allow with input as {"agent_id": "a1"}
}

test_allow_null_principal if {
	identity.allow with input as {"agent_id": "a1", "principal": null}
}

test_allow_the_agent_itself if {
	identity.allow with input as {"agent_id": "a1", "principal": {"kind": "agent", "id": "a1"}}
}

test_deny_another_agent if {
	not identity.allow with input as {"agent_id": "a1", "principal": {"kind": "agent", "id": "a2"}}
	r := identity.reason with input as {"agent_id": "a1", "principal": {"kind": "agent", "id": "a2"}}
	r == "the call for agent 'a1' was made by agent 'a2'"
}

test_deny_an_admin_acting_as_an_agent if {
	not identity.allow with input as {"agent_id": "a1", "principal": {"kind": "admin", "id": "a1"}}
}
