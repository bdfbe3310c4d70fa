# Gate 3: blast-radius risk score. Flags come from the operator's tool
# registry (input.tool) and the call context; weights and the amount
# threshold are data (data.aecl.config.risk), the threshold per agent.
package aecl.risk

import rego.v1

default escalate := false

# A compensation undoes an execution that was decided (and, if risky,
# approved) already: its own score is explained, never a reason to wait.
escalate if {
	not input.compensation
	score > threshold
}

# An agent without a threshold escalates everything it is allowed to do.
default threshold := 0

threshold := data.aecl.config.agents[input.agent_id].auto_approve_threshold

reason := sprintf("risk score %v exceeds the agent's auto-approve threshold %v (flags: %s)", [score, threshold, concat(", ", flags)])

flags := sort([f | some f in raised])

# Rounded to 1/1000: a score is read by people, and every engine's floating
# point agrees on it.
score := round(min([1, sum([w | some f in raised; w := weights[f]])]) * 1000) / 1000

weights := data.aecl.config.risk.weights

# The weight each raised flag contributed, for explanations.
raised_weights := {f: weights[f] | some f in raised}

raised contains "large_amount" if large_amount

raised contains "irreversible" if input.tool.irreversible == true

raised contains "affects_production" if input.tool.affects_production == true

raised contains "bulk_operation" if input.tool.bulk_operation == true

raised contains "untrusted_input" if input.context.untrusted_input_source == true

# The magnitude counts: -100000 moves as much money as 100000. (Validation
# refuses a negative amount; the policy does not rely on it.)
large_amount if {
	is_string(input.tool.amount_arg)
	amount := input.action.args[input.tool.amount_arg]
	is_number(amount)
	abs(amount) > data.aecl.config.risk.amount_threshold
}

# An amount the policy cannot read (missing, or not a number) counts as
# large: fail closed. Through a helper rule: `not is_number(x)` is not true
# when x is undefined, so a missing amount would slip through.
large_amount if {
	is_string(input.tool.amount_arg)
	not readable_amount
}

readable_amount if is_number(input.action.args[input.tool.amount_arg])
