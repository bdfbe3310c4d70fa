# The entrypoint: data.aecl.main.decision combines the gates in a fixed order.
# Blocking gates come first (block wins over everything), then the gates that
# escalate to a human, then approval. The answer always has the same shape;
# the enforcer treats any other shape as an error and blocks.
package aecl.main

import rego.v1

import data.aecl.allowlist
import data.aecl.context_rules
import data.aecl.hitl
import data.aecl.intent
import data.aecl.limits
import data.aecl.paths
import data.aecl.risk

default decision := {
	"outcome": "block",
	"reason": "no rule of the policy produced a decision",
	"risk_score": 1,
	"gate": "default",
	"rule": "default",
	"risk_flags": [],
	"risk_weights": {},
	"approval_ttl_seconds": 0,
}

decision := result("block", "allowlist", allowlist.rule, allowlist.reason) if {
	not allowlist.allow
} else := result("block", "limits", limits.rule, limits.reason) if {
	not limits.allow
} else := result("block", "intent", intent.rule, intent.reason) if {
	not intent.allow
} else := result("block", "paths", paths.rule, paths.reason) if {
	not paths.allow
} else := result("escalate", "context_rules", context_rules.rule_name, context_rules.reason) if {
	context_rules.escalate
} else := result("escalate", "hitl", hitl.rule, hitl.reason) if {
	hitl.escalate
} else := result("escalate", "risk", "risk.over_threshold", risk.reason) if {
	risk.escalate
} else := result(
	"approve", "risk", "risk.within_threshold",
	sprintf("all gates passed; risk score %v within threshold %v", [risk.score, risk.threshold]),
)

result(outcome, gate, rule, why) := {
	"outcome": outcome,
	"reason": why,
	"risk_score": risk.score,
	"gate": gate,
	"rule": rule,
	"risk_flags": risk.flags,
	"risk_weights": risk.raised_weights,
	"approval_ttl_seconds": ttl(outcome),
}

# An escalation carries the strictest expiry of the HITL rules that apply,
# or the default expiry when another gate escalated.
ttl("escalate") := hitl.ttl if hitl.escalate

ttl("escalate") := hitl.ttl_for_other_gates if not hitl.escalate

ttl(outcome) := 0 if outcome != "escalate"
