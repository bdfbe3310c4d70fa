package aecl.paths_test

import rego.v1

import data.aecl.paths

# The enforcer's normalised form of a path (enforcer/pipeline/policy_input.py).
norm(raw, normalized) := {
	"raw": raw, "normalized": normalized, "absolute": startswith(normalized, "/"),
	"escapes_root": false, "had_encoding": raw != normalized, "still_encoded": false,
}

save(args, normalised) := {
	"action": {"name": "save_report", "args": args},
	"tool": {"access": "write", "path_args": ["path", "dest"]},
	"paths": normalised,
}

test_allow_relative_path_within_its_root if {
	paths.allow with input as save({"path": "reports/./q1.csv"}, {"path": norm("reports/./q1.csv", "reports/q1.csv")})
}

test_allow_dotdot_that_stays_inside if {
	paths.allow with input as save({"path": "a/../b"}, {"path": norm("a/../b", "b")})
}

test_allow_tool_without_path_args if {
	paths.allow with input as {"action": {"name": "read_invoice", "args": {"path": "../../etc"}}, "tool": {"access": "read"}}
}

test_allow_undeclared_argument_is_not_a_path if {
	paths.allow with input as save({"path": "x", "note": "../../etc"}, {"path": norm("x", "x")})
}

test_deny_dotdot_escape if {
	i := save({"path": "../../etc/passwd"}, {"path": norm("../../etc/passwd", "../../etc/passwd")})
	not paths.allow with input as i
	paths.rule == "paths.escapes_root" with input as i
	paths.reason == "path argument 'path' climbs above its starting directory" with input as i
}

test_deny_encoded_escape_seen_only_in_normalised_form if {
	# The raw value has no "../"; its decoded, normalised form climbs out.
	i := save({"path": "reports%2f..%2f..%2fx"}, {"path": norm("reports%2f..%2f..%2fx", "../x")})
	not contains(i.action.args.path, "../")
	not paths.allow with input as i
}

test_deny_bare_dotdot if {
	not paths.allow with input as save({"dest": ".."}, {"dest": norm("..", "..")})
}

test_deny_absolute_path if {
	i := save({"dest": "/proc/self/root"}, {"dest": norm("/proc/self/root", "/proc/self/root")})
	not paths.allow with input as i
	paths.rule == "paths.absolute" with input as i
	paths.reason == "path argument 'dest' is absolute" with input as i
}

test_deny_path_still_encoded_after_the_bound if {
	p := object.union(norm("%25252f", "%252f"), {"still_encoded": true})
	i := save({"path": "%25252f"}, {"path": p})
	not paths.allow with input as i
	paths.rule == "paths.still_encoded" with input as i
}

test_deny_declared_path_without_a_normalised_form if {
	i := save({"path": "x"}, {})
	not paths.allow with input as i
	paths.rule == "paths.not_normalised" with input as i
}

test_deny_input_without_paths_key if {
	not paths.allow with input as object.remove(save({"path": "x"}, {}), ["paths"])
}

test_deny_lists_every_offending_argument if {
	i := save(
		{"path": "../x", "dest": "/etc"},
		{"path": norm("../x", "../x"), "dest": norm("/etc", "/etc")},
	)
	paths.rule == "paths.escapes_root" with input as i
	paths.reason == "path argument 'dest' is absolute; path argument 'path' climbs above its starting directory" with input as i
}
