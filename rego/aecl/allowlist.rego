# Gate 1: the agent's allow and block lists.
# Block wins over everything; an action named in context_rules counts as
# permitted under its rule; an action on no list is blocked.
package aecl.allowlist

import rego.v1

default allow := false

allow if {
	known_agent
	not blocked
	permitted
}

reason := sprintf("unknown agent '%s'", [input.agent_id]) if {
	not known_agent
} else := sprintf("action '%s' is on the block list of agent '%s'", [input.action.name, input.agent_id]) if {
	blocked
} else := sprintf("action '%s' is on no allow list of agent '%s'", [input.action.name, input.agent_id]) if {
	not permitted
}

rule := "allowlist.unknown_agent" if {
	not known_agent
} else := "allowlist.blocked" if {
	blocked
} else := "allowlist.not_permitted"

agent := data.aecl.config.agents[input.agent_id]

known_agent if agent

blocked if input.action.name in agent.blocked_actions

permitted if input.action.name in agent.allowed_actions

permitted if agent.context_rules[input.action.name]
