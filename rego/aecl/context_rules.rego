# Context rules: an agent manifest can put an action under a rule such as
# requires_human_approval or requires_data_owner_consent. Every rule
# escalates, and the reason names it.
package aecl.context_rules

import rego.v1

default escalate := false

escalate if rule

rule := data.aecl.config.agents[input.agent_id].context_rules[input.action.name]

rule_name := concat(".", ["context_rules", rule])

reason := sprintf("context rule '%s' applies to action '%s'", [rule, input.action.name])
