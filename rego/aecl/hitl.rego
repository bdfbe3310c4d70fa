# HITL routing: which calls wait for a human, and how long an approval stays
# valid. Routes, the risk floor and expiries are data (data.aecl.config.hitl,
# compiled from the service config), so operators change them without code.
package aecl.hitl

import rego.v1

import data.aecl.risk

default escalate := false

escalate if count(reasons) > 0

hitl := data.aecl.config.hitl

# Each applicable rule with its approval expiry in seconds.
reasons[sprintf("action '%s' always requires approval", [input.action.name])] := ttl if {
	ttl := hitl.routes[input.action.name]
}

reasons[sprintf("risk score %v is above the approval floor %v", [risk.score, hitl.risk_floor])] := ttl if {
	not input.compensation
	risk.score > hitl.risk_floor
	ttl := hitl.risk_floor_ttl_seconds
}

# Nothing can undo it, so a human must say yes first. (A compensation is
# the undo itself: the execution it reverses was decided already.)
reasons[sprintf("tool '%s' is irreversible and has no compensating action", [input.action.name])] := ttl if {
	not input.compensation
	input.tool.irreversible == true
	not compensable
	ttl := hitl.default_ttl_seconds
}

# The strictest expiry of every rule that applies.
ttl := min([t | some t in reasons])

# Expiry for an escalation decided by another gate (context rules, the
# agent's own threshold).
default ttl_for_other_gates := 3600

ttl_for_other_gates := hitl.default_ttl_seconds

reason := concat("; ", sort([r | some r; reasons[r]]))

rule := "hitl.route" if hitl.routes[input.action.name]

else := "hitl.risk_floor" if {
	not input.compensation
	risk.score > hitl.risk_floor
}

else := "hitl.irreversible_uncompensated"

# An approval in the input (the service running an approved call) counts
# only for the call it was made for. The enforcer checks the exact
# arguments (their digest) before it asks; this is the policy's own check.
default approved := false

approved if {
	input.approval.status == "approved"
	input.approval.tool == input.action.name
	input.approval.approver.kind == "approver"
}

approved_reason := sprintf("approved by %s (approval %s), escalated first by %s", [
	input.approval.approver.id,
	input.approval.approval_id,
	input.approval.rule,
])

# The registry names a compensating tool (the enforcer sends null when it
# names none: `not input.tool.compensating_action` would not see that).
compensable if is_string(input.tool.compensating_action)
