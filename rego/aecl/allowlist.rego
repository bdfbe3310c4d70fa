# Gate 1: the agent's allow and block lists.
# Block wins over everything; an action named in context_rules counts as
# permitted under its rule; an action on no list is blocked.
#
# A compensation (input.compensation: the rollback engine undoing an
# execution of the task with the tool the registry registers for it) is
# allowed by the manifest's may_roll_back, not by its lists: an agent may
# be allowed to roll back what it may not do, or (may_roll_back: false) to
# act and not to roll back.
package aecl.allowlist

import rego.v1

default allow := false

allow if {
	known_agent
	not input.compensation
	not blocked
	permitted
}

allow if {
	known_agent
	input.compensation
	may_roll_back
}

may_roll_back if object.get(agent, "may_roll_back", true) == true

reason := sprintf("unknown agent '%s'", [input.agent_id]) if {
	not known_agent
} else := sprintf("agent '%s' may not roll back (may_roll_back: false)", [input.agent_id]) if {
	input.compensation
	not may_roll_back
} else := sprintf("action '%s' is on the block list of agent '%s'", [input.action.name, input.agent_id]) if {
	blocked
} else := sprintf("action '%s' is on no allow list of agent '%s'", [input.action.name, input.agent_id]) if {
	not permitted
}

rule := "allowlist.unknown_agent" if {
	not known_agent
} else := "allowlist.rollback_not_allowed" if {
	input.compensation
	not may_roll_back
} else := "allowlist.blocked" if {
	blocked
} else := "allowlist.not_permitted"

agent := data.aecl.config.agents[input.agent_id]

known_agent if agent

blocked if input.action.name in agent.blocked_actions

permitted if input.action.name in agent.allowed_actions

permitted if agent.context_rules[input.action.name]
