package aecl.limits_test

import rego.v1

import data.aecl.limits

agents := {"a1": {"max_tool_calls_per_run": 50}}

call(n, now) := {"agent_id": "a1", "task": {"calls_so_far": n, "expires_at": 1000}, "now": now}

test_allow_last_call_in_budget if {
	limits.allow with input as call(49, 10) with data.aecl.config.agents as agents
}

test_deny_call_past_budget if {
	not limits.allow with input as call(50, 10) with data.aecl.config.agents as agents
	r := limits.reason with input as call(50, 10) with data.aecl.config.agents as agents
	r == "call budget exhausted: 50 of 50 tool calls already made in this run"
}

test_deny_expired_task if {
	not limits.allow with input as call(0, 1000) with data.aecl.config.agents as agents
	r := limits.reason with input as call(0, 1000) with data.aecl.config.agents as agents
	startswith(r, "task expired")
}

test_deny_agent_without_limits if {
	not limits.allow with input as call(0, 10) with data.aecl.config.agents as {}
}

test_deny_explains_each_rule if {
	expired := limits.rule with input as {"agent_id": "a1", "task": {"calls_so_far": 0, "expires_at": 10}, "now": 20}
		with data.aecl.config.agents as {"a1": {"max_tool_calls_per_run": 5}}
	expired == "limits.task_expired"
	budget := limits.rule with input as {"agent_id": "a1", "task": {"calls_so_far": 5, "expires_at": 30}, "now": 20}
		with data.aecl.config.agents as {"a1": {"max_tool_calls_per_run": 5}}
	budget == "limits.call_budget"
}

test_deny_expired_task_names_the_deadline_in_whole_seconds if {
	r := limits.reason with input as {"agent_id": "a1", "task": {"calls_so_far": 0, "expires_at": 1700001200.5}, "now": 1700005000}
		with data.aecl.config.agents as agents
	r == "task expired: the task-loop deadline passed at 1700001200"
}
