# Declared path arguments. A registry entry can name the arguments that hold
# a file path (path_args); the enforcer gives the policy each one's
# normalised form in input.paths[name] (percent-decoded, `.` and `..`
# resolved, slashes folded). This gate blocks a declared path that is still
# encoded after the decoding bound, or has no normalised form (fail closed),
# and then:
#   - for a tool with a path_root (input.tool.path_root, an absolute
#     directory such as an MCP server's /workspace): a path that does not
#     resolve inside that root (input.paths[name].inside_root, a relative
#     path taken from the root). An absolute path inside it is fine.
#   - for a tool without one: a path that is absolute or climbs above its
#     starting directory.
# Tools that declare no path_args pass.
package aecl.paths

import rego.v1

default allow := false

allow if count(offending) == 0

# The declared path arguments the agent sent.
sent contains name if {
	some name, _ in input.action.args
	name in input.tool.path_args
}

# The tool's root, when it declares one.
root := input.tool.path_root if is_string(input.tool.path_root)

has_root if is_string(root)

# Through a helper rule: `not is_string(x)` is not true when x is undefined.
not_normalised contains name if {
	some name in sent
	not normalised(name)
}

normalised(name) if is_string(input.paths[name].normalized)

still_encoded contains name if {
	some name in sent
	input.paths[name].still_encoded == true
}

# With a root: fail closed unless the enforcer said "inside" for this very root.
outside_root contains name if {
	has_root
	some name in sent
	normalised(name)
	not inside(name)
}

inside(name) if {
	input.paths[name].inside_root == true
	input.paths[name].root == root
}

escapes_root contains name if {
	not has_root
	some name in sent
	climbs(input.paths[name].normalized)
}

absolute contains name if {
	not has_root
	some name in sent
	startswith(input.paths[name].normalized, "/")
}

climbs(path) if path == ".."

climbs(path) if startswith(path, "../")

offending := union({not_normalised, still_encoded, outside_root, escapes_root, absolute})

messages contains concat("", ["path argument '", name, "' has no normalised form"]) if some name in not_normalised

messages contains concat("", ["path argument '", name, "' is still percent-encoded after the decoding bound"]) if {
	some name in still_encoded
}

messages contains concat("", ["path argument '", name, "' climbs above its starting directory"]) if {
	some name in escapes_root
}

messages contains concat("", ["path argument '", name, "' is absolute"]) if some name in absolute

messages contains concat("", ["path argument '", name, "' resolves to '", shown(name), "', outside the tool's root '", root, "'"]) if {
	some name in outside_root
}

# The path as the tool would see it (the resolved form, else the
# normalised one), cut to MAX_SHOWN characters: a reason is read by people.
max_shown := 200

resolved(name) := input.paths[name].resolved if {
	is_string(input.paths[name].resolved)
} else := input.paths[name].normalized

shown(name) := resolved(name) if {
	count(resolved(name)) <= max_shown
} else := concat("", [substring(resolved(name), 0, max_shown), "..."])

reason := concat("; ", sort(messages))

rule := "paths.not_normalised" if {
	count(not_normalised) > 0
} else := "paths.still_encoded" if {
	count(still_encoded) > 0
} else := "paths.outside_root" if {
	count(outside_root) > 0
} else := "paths.escapes_root" if {
	count(escapes_root) > 0
} else := "paths.absolute"
