# Gate 2: intent alignment. A write action must lie within what the task
# declared: its declared_actions when it named any, else its declared goal
# must name the action (words or identifier).
package aecl.intent

import rego.v1

default allow := false

allow if input.tool.access == "read"

allow if {
	input.tool.access == "write"
	in_scope
}

reason := sprintf("Action scope exceeds declared task intent: '%s' is not among the declared actions %v", [input.action.name, input.task.declared_actions]) if {
	not allow
	count(input.task.declared_actions) > 0
} else := sprintf("Action scope exceeds declared task intent: the declared goal does not name '%s'", [input.action.name]) if {
	not allow
}

rule := "intent.outside_declared_actions" if {
	count(input.task.declared_actions) > 0
} else := "intent.not_in_declared_goal"

in_scope if {
	count(input.task.declared_actions) > 0
	input.action.name in input.task.declared_actions
}

in_scope if {
	count(input.task.declared_actions) == 0
	goal := lower(input.task.declared_goal)
	some form in action_forms
	contains(goal, form)
}

action_forms := {lower(input.action.name), replace(lower(input.action.name), "_", " ")}
