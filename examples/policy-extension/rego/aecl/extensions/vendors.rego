# A worked extension: payments go only to verified vendors, and each agent
# has its own cap per transfer (in the registry's minor units, as the amount
# is sent). The data lives beside the policy, in rego/vendors/data.json, so
# `opa test` and the service see the same lists.
package aecl.extensions.vendors

import rego.v1

verified := data.vendors.verified_vendors

caps := data.vendors.amount_caps

deny contains reason if {
	input.action.name == "transfer_funds"
	vendor := object.get(input.action.args, "vendor", "")
	not verified[vendor]
	reason := sprintf("vendor '%v' is not on the list of verified vendors", [vendor])
}

deny contains reason if {
	input.action.name == "transfer_funds"
	cap := caps[input.agent_id]
	amount := input.action.args.amount
	is_number(amount)
	abs(amount) > cap
	reason := concat("", ["amount is over the per-transfer cap of agent ", input.agent_id])
}

# An agent with no cap of its own may not transfer at all.
deny contains reason if {
	input.action.name == "transfer_funds"
	not caps[input.agent_id]
	reason := concat("", ["agent ", input.agent_id, " has no transfer cap"])
}
