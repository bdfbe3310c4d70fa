# Run limits: the task's call budget and its task-loop deadline.
# calls_so_far counts the calls made before this one, so the call that would
# exceed max_tool_calls_per_run is the one blocked.
package aecl.limits

import rego.v1

default allow := false

allow if {
	not over_budget
	not expired
}

# Undoing what the task did is not one of its calls: neither its budget nor
# its end stops a rollback.
allow if input.compensation

# The deadline in whole seconds: under OPA, %v prints a float such as
# 1700001200.0 as 1.7000012e+09, and whether a time arrives as 1700001200.0
# or 1700001200 depends on the JSON it travelled through (the audit log's
# canonical JSON drops the ".0"), so a replay would reword the reason.
reason := sprintf("task expired: the task-loop deadline passed at %d", [floor(input.task.expires_at)]) if {
	expired
} else := sprintf("call budget exhausted: %d of %d tool calls already made in this run", [input.task.calls_so_far, max_calls]) if {
	over_budget
}

rule := "limits.task_expired" if expired

else := "limits.call_budget"

max_calls := data.aecl.config.agents[input.agent_id].max_tool_calls_per_run

over_budget if input.task.calls_so_far >= max_calls

# Unknown limits fail closed: no budget means no calls.
over_budget if not max_calls

expired if input.now >= input.task.expires_at
