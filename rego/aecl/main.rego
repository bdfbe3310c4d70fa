# The entrypoint: data.aecl.main.decision combines the gates in a fixed order.
# Blocking gates come first (block wins over everything), then the gates that
# escalate to a human, then approval. The answer always has the same shape;
# the enforcer treats any other shape as an error and blocks.
#
# Operator extensions: every package under data.aecl.extensions (for example
# rego/aecl/extensions/vendors.rego, `package aecl.extensions.vendors`) may
# define `deny` and `escalate`, each a set of reason strings. They are applied
# without editing this file, in this order:
#   identity, allowlist, scope, limits, intent, history, paths   (block)
#   extensions: any deny                    (block; the first by package name, then reason)
#   context_rules, hitl                     (escalate)
#   extensions: any escalate                (escalate)
#   risk                                    (escalate, else approve)
# An approved call is decided again when the service runs it, with its
# approval in input.approval: the approval turns an escalation (of any gate)
# into an approval, never a block, so a block by the policy now in force
# wins over an old approval (rule "hitl.approved").
# An extension whose deny or escalate is not a set of strings blocks every
# call (gate "extensions", rule "extensions.malformed"): a mistake in an
# extension fails closed.
package aecl.main

import rego.v1

import data.aecl.allowlist
import data.aecl.context_rules
import data.aecl.extensions
import data.aecl.history
import data.aecl.hitl
import data.aecl.identity
import data.aecl.intent
import data.aecl.limits
import data.aecl.paths
import data.aecl.risk
import data.aecl.scope

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

decision := result("approve", "hitl", "hitl.approved", hitl.approved_reason) if {
	verdict.outcome == "escalate"
	hitl.approved
} else := verdict

default verdict := {
	"outcome": "block",
	"reason": "no rule of the policy produced a decision",
	"risk_score": 1,
	"gate": "default",
	"rule": "default",
	"risk_flags": [],
	"risk_weights": {},
	"approval_ttl_seconds": 0,
}

verdict := result("block", "identity", identity.rule, identity.reason) if {
	not identity.allow
} else := result("block", "allowlist", allowlist.rule, allowlist.reason) if {
	not allowlist.allow
} else := result("block", "scope", scope.rule, scope.reason) if {
	not scope.allow
} else := result("block", "limits", limits.rule, limits.reason) if {
	not limits.allow
} else := result("block", "intent", intent.rule, intent.reason) if {
	not intent.allow
} else := result("block", "history", history.rule, history.reason) if {
	not history.allow
} else := result("block", "paths", paths.rule, paths.reason) if {
	not paths.allow
} else := result(
	"block", "extensions", "extensions.malformed",
	concat("", ["extension package '", malformed_extensions[0], "' defines deny or escalate as something other than a set of strings"]),
) if {
	count(malformed_extensions) > 0
} else := result("block", "extensions", concat(".", ["extensions", extension_denials[0][0], "deny"]), extension_denials[0][1]) if {
	count(extension_denials) > 0
} else := result("escalate", "context_rules", context_rules.rule_name, context_rules.reason) if {
	context_rules.escalate
} else := result("escalate", "hitl", hitl.rule, hitl.reason) if {
	hitl.escalate
} else := result(
	"escalate", "extensions", concat(".", ["extensions", extension_escalations[0][0], "escalate"]),
	extension_escalations[0][1],
) if {
	count(extension_escalations) > 0
} else := result("escalate", "risk", "risk.over_threshold", risk.reason) if {
	risk.escalate
} else := result(
	"approve", "rollback", "rollback.compensation",
	sprintf("compensation of %s (%s): every blocking gate passed", [input.compensation.of, input.compensation.tool]),
) if {
	input.compensation
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

# [package, reason] pairs, sorted: the first one decides and is named.
extension_denials := sort([[name, reason] |
	some name
	reasons := extensions[name].deny
	is_set(reasons)
	some reason in reasons
	is_string(reason)
])

extension_escalations := sort([[name, reason] |
	some name
	reasons := extensions[name].escalate
	is_set(reasons)
	some reason in reasons
	is_string(reason)
])

malformed_extensions := sort([name |
	some name
	ext := extensions[name]
	some rule in ["deny", "escalate"]
	not well_formed(ext, rule)
])

well_formed(ext, rule) if not has_key(ext, rule)

well_formed(ext, rule) if {
	is_set(ext[rule])
	every reason in ext[rule] {
		is_string(reason)
	}
}

has_key(obj, key) if _ = obj[key]
