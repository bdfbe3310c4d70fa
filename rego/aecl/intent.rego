# Gate 2: intent alignment. A write action must lie within what the task
# declared: its declared_actions when it named any (the precise form), else
# its declared goal must name the action. The goal names it when every word
# of the action's name appears among the goal's words, in any order and any
# case, filler words aside: "Please generate a payment report" names
# generate_payment_report, and so does "report: generate the payment one".
# Words are separated by white space and ASCII punctuation, so `_`, `.`,
# `:` and `-` separate them too (generate_payment_report, in the goal, names
# itself).
#
# A task may also declare the resources its writes may touch
# (task.declared_resources, at StartTask): then a write action whose tool
# names a resource argument (input.tool.resource_arg) must touch one of them
# (input.resource, matched exactly), or it is blocked: "updates a record it
# wasn't supposed to touch". No declared resources: not checked.
package aecl.intent

import rego.v1

default allow := false

allow if input.tool.access == "read"

# A compensation undoes one of the task's own executions: within its intent by construction.
allow if input.compensation

allow if {
	input.tool.access == "write"
	in_scope
	not outside_declared_resources
}

reason := resource_reason if {
	not allow
	in_scope
	outside_declared_resources
} else := sprintf("Action scope exceeds declared task intent: '%s' is not among the declared actions %v", [input.action.name, input.task.declared_actions]) if {
	not allow
	count(input.task.declared_actions) > 0
} else := sprintf("Action scope exceeds declared task intent: the declared goal does not name '%s'", [input.action.name]) if {
	not allow
}

rule := "intent.outside_declared_resources" if {
	in_scope
	outside_declared_resources
} else := "intent.outside_declared_actions" if {
	count(input.task.declared_actions) > 0
} else := "intent.not_in_declared_goal"

declared_resources := object.get(input.task, "declared_resources", [])

resource := object.get(input, "resource", null)

# A missing resource argument is outside too: fail closed.
outside_declared_resources if {
	is_string(input.tool.resource_arg)
	count(declared_resources) > 0
	not resource in declared_resources
}

resource_reason := sprintf("Action touches resource '%s' outside the task's declared resources %v", [resource, declared_resources]) if {
	is_string(resource)
} else := sprintf("Action names no resource (argument '%s') but the task declared resources %v", [input.tool.resource_arg, declared_resources])

in_scope if {
	count(input.task.declared_actions) > 0
	input.action.name in input.task.declared_actions
}

in_scope if {
	count(input.task.declared_actions) == 0
	count(action_words) > 0
	every word in action_words {
		word in goal_words
	}
}

# Words that say nothing about what is done. They are ignored in the action's
# name (send_to_vendor is {send, vendor}) unless the name has nothing else; in
# the goal, any word the action does not need is ignored anyway.
filler_words := {
	"a", "an", "the", "please", "to", "of", "for", "in", "on", "at", "by", "with", "from", "into",
	"and", "my", "our", "your", "this", "that", "these", "those", "some",
}

# Every ASCII punctuation character and white space separates words.
separators := {c: " " | some c in split("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\t\n\r", "")}

words(text) := {w | some w in split(strings.replace_n(separators, lower(text)), " "); w != ""}

goal_words := words(input.task.declared_goal)

action_words := significant if {
	significant := words(input.action.name) - filler_words
	count(significant) > 0
} else := words(input.action.name)
