# The entrypoint: combines the gates into one decision document.
# Order: any block wins (allow lists, run limits, intent), then escalation
# (context rules, then risk), else approve. The document's shape is a
# contract checked by the enforcer; anything else is treated as BLOCK.
package aecl.main

import rego.v1

import data.aecl.allowlist
import data.aecl.context_rules
import data.aecl.intent
import data.aecl.limits
import data.aecl.risk

default decision := {
	"outcome": "block",
	"reason": "no rule of the policy produced a decision",
	"risk_score": 1,
	"gate": "default",
	"risk_flags": [],
	"approval_ttl_seconds": 0,
}

decision := result("block", "allowlist", allowlist.reason) if {
	not allowlist.allow
} else := result("block", "limits", limits.reason) if {
	not limits.allow
} else := result("block", "intent", intent.reason) if {
	not intent.allow
} else := result("escalate", "context_rules", context_rules.reason) if {
	context_rules.escalate
} else := result("escalate", "risk", risk.reason) if {
	risk.escalate
} else := result("approve", "risk", sprintf("all gates passed; risk score %v within threshold %v", [risk.score, risk.threshold]))

result(outcome, gate, why) := {
	"outcome": outcome,
	"reason": why,
	"risk_score": risk.score,
	"gate": gate,
	"risk_flags": risk.flags,
	"approval_ttl_seconds": ttl(outcome),
}

ttl("escalate") := data.aecl.config.hitl.approval_ttl_seconds

ttl(outcome) := 0 if outcome != "escalate"
