# Gate 2: intent alignment. A write action must lie within what the task
# declared: its declared_actions when it named any (the precise form), else
# its declared goal must name the action. The goal names it when every word
# of the action's name appears among the goal's words, in any order and any
# case, filler words aside: "Please generate a payment report" names
# generate_payment_report, and so does "report: generate the payment one".
# Words are separated by white space and ASCII punctuation, so `_`, `.`,
# `:` and `-` separate them too (generate_payment_report, in the goal, names
# itself).
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
