# Gate: what the task already did. Cumulative rules over the task's earlier
# calls (input.task.history: each Execute that reached a decision, oldest
# first, {tool, outcome, amount, resource, at}; at most the last 200, with
# input.task.history_truncated true when older ones were left out). The
# rules are data (data.aecl.config.history, from policy.history):
# - amount_caps, tool -> cap: the amounts of the tool's earlier approved or
#   escalated calls in this task plus this call's amount may not exceed the
#   cap (a per-task transfer cap);
# - max_repeats, tool -> N: at most N earlier calls of the tool on the same
#   resource (input.resource, the tool's resource_arg) within window_seconds
#   (default 3600), blocked calls aside; the (N+1)th is blocked. A tool
#   without a resource_arg counts all its calls as one resource.
# Fails closed: a capped call whose amount cannot be read, or a call to a
# rule's tool when part of the history is missing, is blocked.
package aecl.history

import rego.v1

default allow := false

allow if {
	not unseen_history
	not unreadable_amount
	not over_cap
	not too_many_repeats
}

# A compensation (its retries included) is bounded by the rollback engine, not by these rules.
allow if input.compensation

reason := sprintf("the task made more calls than its history carries: '%s' has a history rule and cannot be checked", [tool]) if {
	unseen_history
} else := sprintf("'%s' has a per-task amount cap of %v but this call's amount cannot be read", [tool, cap]) if {
	unreadable_amount
} else := sprintf("%s amounts in this task would reach %v, over the cap of %v (%v already approved or escalated)", [tool, spent + amount, cap, spent]) if {
	over_cap
} else := repeat_reason

rule := "history.history_truncated" if {
	unseen_history
} else := "history.amount_unreadable" if {
	unreadable_amount
} else := "history.amount_cap" if {
	over_cap
} else := "history.max_repeats"

settings := object.get(data.aecl.config, "history", {})

caps := object.get(settings, "amount_caps", {})

repeat_limits := object.get(settings, "max_repeats", {})

window := object.get(settings, "window_seconds", 3600)

history := object.get(input.task, "history", [])

tool := input.action.name

resource := object.get(input, "resource", null)

has_rule if caps[tool]

has_rule if repeat_limits[tool]

unseen_history if {
	input.task.history_truncated == true
	has_rule
}

# -- amount caps ---------------------------------------------------------------

cap := caps[tool]

amount := input.action.args[input.tool.amount_arg]

unreadable_amount if {
	cap
	not is_number(amount)
}

# The earlier calls that moved (or may yet move) an amount: approved, or
# waiting for a human.
spent := sum([c.amount |
	some c in history
	c.tool == tool
	c.outcome in {"approve", "escalate"}
	is_number(c.amount)
])

over_cap if {
	is_number(amount)
	spent + amount > cap
}

# -- repeats -------------------------------------------------------------------

repeat_limit := repeat_limits[tool]

repeats := count([c |
	some c in history
	c.tool == tool
	object.get(c, "resource", null) == resource
	c.outcome != "block"
	input.now - c.at < window
])

too_many_repeats if repeats >= repeat_limit

repeat_reason := sprintf("%s on '%s' already made %d times in this task (at most %d within %d seconds)", [tool, resource, repeats, repeat_limit, window]) if {
	is_string(resource)
} else := sprintf("%s already made %d times in this task (at most %d within %d seconds)", [tool, repeats, repeat_limit, window])
