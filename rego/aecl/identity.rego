# Gate 0: who is really calling. input.principal is what authentication
# proved (the enforcer's interceptor: an API key, a client certificate or a
# task token), never what the request says. A call is blocked when the proven
# principal is not the agent it is made for, whatever the other gates say:
# defence in depth behind the interceptor, and the place to add rules on the
# caller (e.g. only certificate-authenticated agents may write).
# In-process callers without a transport (`aecl decide`, replays of logs
# written before principals existed) carry no principal: nothing to check.
package aecl.identity

import rego.v1

default allow := false

allow if not input.principal # absent (a log written before principals)

allow if input.principal == null # an in-process caller

allow if {
	input.principal.kind == "agent"
	input.principal.id == input.agent_id
}

rule := "identity.principal_mismatch"

reason := sprintf(
	"the call for agent '%s' was made by %s '%s'",
	[input.agent_id, input.principal.kind, input.principal.id],
)
