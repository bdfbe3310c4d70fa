# Gate: connector scopes. A tool reaches production systems only through the
# connectors its registry entry names (input.tool.connectors), and each
# connector needs a scope (data.aecl.config.connectors[name].scope, from the
# service config) that the agent's manifest grants (credential_scope). A call
# whose tool uses a connector the agent has no scope for, or one that is not
# configured, is blocked here: before any sandbox starts.
package aecl.scope

import rego.v1

default allow := false

allow if {
	count(unknown) == 0
	count(missing) == 0
}

reason := sprintf("tool '%s' uses connector '%s', which is not configured", [input.action.name, unknown[0]]) if {
	count(unknown) > 0
} else := sprintf("tool '%s' uses connector '%s', which needs scope '%s': not in the credential_scope of agent '%s'", [input.action.name, missing[0][0], missing[0][1], input.agent_id])

rule := "scope.unknown_connector" if {
	count(unknown) > 0
} else := "scope.missing_scope"

connectors := object.get(input.tool, "connectors", [])

configured := object.get(data.aecl.config, "connectors", {})

granted := {s | some s in data.aecl.config.agents[input.agent_id].credential_scope}

unknown := sort([c | some c in connectors; not configured[c].scope])

# [connector, scope] pairs, sorted: the first one is named.
missing := sort([[c, s] |
	some c in connectors
	s := configured[c].scope
	not s in granted
])
