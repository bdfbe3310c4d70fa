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

# A tool with a path_root (an MCP server's workspace): the enforcer's
# normalised form carries the root, the resolved path and inside_root.
rooted(raw, resolved, inside) := {
	"raw": raw, "normalized": resolved, "absolute": startswith(raw, "/"),
	"escapes_root": false, "had_encoding": false, "still_encoded": false,
	"root": "/workspace", "resolved": resolved, "inside_root": inside,
}

write_in_workspace(args, normalised) := {
	"action": {"name": "write_file", "args": args},
	"tool": {"access": "write", "path_args": ["path", "destination"], "path_root": "/workspace"},
	"paths": normalised,
}

test_allow_absolute_path_inside_the_root if {
	paths.allow with input as write_in_workspace(
		{"path": "/workspace/notes/a.txt"},
		{"path": rooted("/workspace/notes/a.txt", "/workspace/notes/a.txt", true)},
	)
}

test_allow_the_root_itself if {
	paths.allow with input as write_in_workspace({"path": "/workspace"}, {"path": rooted("/workspace", "/workspace", true)})
}

test_allow_relative_path_taken_from_the_root if {
	p := object.union(rooted("notes/a.txt", "/workspace/notes/a.txt", true), {"normalized": "notes/a.txt"})
	paths.allow with input as write_in_workspace({"path": "notes/a.txt"}, {"path": p})
}

test_allow_tool_with_root_and_null_path_root_is_the_rootless_gate if {
	i := {
		"action": {"name": "save_report", "args": {"path": "x"}},
		"tool": {"access": "write", "path_args": ["path"], "path_root": null},
		"paths": {"path": object.union(norm("x", "x"), {"root": null, "resolved": null, "inside_root": true})},
	}
	paths.allow with input as i
}

test_deny_absolute_path_outside_the_root if {
	i := write_in_workspace({"path": "/etc/passwd"}, {"path": rooted("/etc/passwd", "/etc/passwd", false)})
	not paths.allow with input as i
	paths.rule == "paths.outside_root" with input as i
	paths.reason == "path argument 'path' resolves to '/etc/passwd', outside the tool's root '/workspace'" with input as i
}

test_deny_dotdot_out_of_the_root if {
	p := object.union(rooted("/workspace/../home/x", "/home/x", false), {"normalized": "/home/x"})
	i := write_in_workspace({"destination": "/workspace/../home/x"}, {"destination": p})
	paths.rule == "paths.outside_root" with input as i
	paths.reason == "path argument 'destination' resolves to '/home/x', outside the tool's root '/workspace'" with input as i
}

test_deny_sibling_with_the_root_as_prefix if {
	i := write_in_workspace({"path": "/workspace2/x"}, {"path": rooted("/workspace2/x", "/workspace2/x", false)})
	paths.rule == "paths.outside_root" with input as i
}

test_deny_inside_flag_for_another_root if {
	# inside_root counts only for the tool's own root (fail closed).
	p := object.union(rooted("/tmp/x", "/tmp/x", true), {"root": "/tmp"})
	i := write_in_workspace({"path": "/tmp/x"}, {"path": p})
	not paths.allow with input as i
	paths.rule == "paths.outside_root" with input as i
}

test_deny_root_without_inside_flag if {
	p := object.remove(rooted("/workspace/a", "/workspace/a", true), ["inside_root"])
	not paths.allow with input as write_in_workspace({"path": "/workspace/a"}, {"path": p})
}

test_deny_outside_root_shows_normalised_form_without_resolved if {
	p := object.remove(rooted("/etc", "/etc", false), ["resolved"])
	i := write_in_workspace({"path": "/etc"}, {"path": p})
	paths.reason == "path argument 'path' resolves to '/etc', outside the tool's root '/workspace'" with input as i
}

test_deny_outside_root_cuts_a_long_path if {
	long := concat("", ["/", concat("", [x | some _ in numbers.range(1, 300); x := "a"])])
	i := write_in_workspace({"path": long}, {"path": rooted(long, long, false)})
	paths.reason == concat("", ["path argument 'path' resolves to '", substring(long, 0, 200), "...', outside the tool's root '/workspace'"]) with input as i
}

test_deny_still_encoded_inside_the_root if {
	p := object.union(rooted("/workspace/%25252f", "/workspace/%252f", true), {"still_encoded": true})
	i := write_in_workspace({"path": "/workspace/%25252f"}, {"path": p})
	not paths.allow with input as i
	paths.rule == "paths.still_encoded" with input as i
}

test_deny_not_normalised_with_a_root if {
	i := write_in_workspace({"path": "/workspace/a"}, {})
	paths.rule == "paths.not_normalised" with input as i
	paths.reason == "path argument 'path' has no normalised form" with input as i
}

test_deny_lists_every_argument_outside_the_root if {
	i := write_in_workspace(
		{"path": "/workspace/a", "destination": "/etc/x"},
		{"path": rooted("/workspace/a", "/workspace/a", true), "destination": rooted("/etc/x", "/etc/x", false)},
	)
	paths.reason == "path argument 'destination' resolves to '/etc/x', outside the tool's root '/workspace'" with input as i
}
