# Declared path arguments. A registry entry can name the arguments that hold
# a file path (path_args); the enforcer gives the policy each one's
# normalised form in input.paths[name] (percent-decoded, `.` and `..`
# resolved, slashes folded). A declared path is relative to the tool's own
# starting directory: this gate blocks one that is absolute, climbs above
# its start, is still encoded after the decoding bound, or has no
# normalised form (fail closed). Tools that declare no path_args pass.
package aecl.paths

import rego.v1

default allow := false

allow if count(offending) == 0

# The declared path arguments the agent sent.
sent contains name if {
	some name, _ in input.action.args
	name in input.tool.path_args
}

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

escapes_root contains name if {
	some name in sent
	climbs(input.paths[name].normalized)
}

absolute contains name if {
	some name in sent
	startswith(input.paths[name].normalized, "/")
}

climbs(path) if path == ".."

climbs(path) if startswith(path, "../")

offending := union({not_normalised, still_encoded, escapes_root, absolute})

messages contains concat("", ["path argument '", name, "' has no normalised form"]) if some name in not_normalised

messages contains concat("", ["path argument '", name, "' is still percent-encoded after the decoding bound"]) if {
	some name in still_encoded
}

messages contains concat("", ["path argument '", name, "' climbs above its starting directory"]) if {
	some name in escapes_root
}

messages contains concat("", ["path argument '", name, "' is absolute"]) if some name in absolute

reason := concat("; ", sort(messages))

rule := "paths.not_normalised" if {
	count(not_normalised) > 0
} else := "paths.still_encoded" if {
	count(still_encoded) > 0
} else := "paths.escapes_root" if {
	count(escapes_root) > 0
} else := "paths.absolute"
