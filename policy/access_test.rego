# Unit tests of package tether.access, run by `go test ./policy` (through
# policy.Test) or `opa test policy/`.
package tether.access_test

import data.tether.access

# A request the default policy allows: an engineer with an open, verified
# ticket asks for both scopes for an hour, at noon on 2025-06-01.
base := {
	"requester": {
		"subject": "u-1",
		"email": "eve@vendor.example",
		"issuer": "https://idp.vendor.example",
		"tenant": "",
		"roles": ["engineer"],
		"groups": ["eng"],
		"github_login": "eve",
		"github_teams": ["sre"],
	},
	"deployment": {
		"id": "dep-1",
		"tenant": "acme",
		"name": "acme-prod",
		"region": "eu-west-1",
		"labels": {"env": "prod"},
		"freeze_windows": null,
		"maintenance_windows": null,
	},
	"ticket": {
		"ref": "acme/incidents#42",
		"verified": true,
		"state": "open",
		"labels": ["bug"],
		"assignees": ["eve"],
	},
	"scopes": ["clickhouse:system", "prometheus:read"],
	"duration_seconds": 3600,
	"break_glass": false,
	"dev": false,
	"time": "2025-06-01T12:00:00Z",
	"action": "access",
}

# with_(patch) is base with patch merged in, recursively.
with_(patch) := object.union(base, patch)

# decide(req) is the decision on req. It also asserts, for every input the
# tests try, that the checks and the problems explaining them agree.
decide(req) := d if {
	d := access.decision with input as req
	consistent with input as req
}

consistent if {
	access.all_checks_pass
	count(access.problems) == 0
}

consistent if {
	not access.all_checks_pass
	count(access.problems) > 0
}

one_approver := [{"tenant": "acme", "role": "approver", "count": 1}]

two_approvers := [{"tenant": "acme", "role": "approver", "count": 2}]

two_internal := [{"tenant": "", "role": "internal", "count": 2}]

has_reason(d, part) if {
	some r in d.reasons
	contains(r, part)
}

denied_with(d, part) if {
	d.allow == false
	has_reason(d, part)
}

# Allowed.

test_allow_engineer_with_ticket if {
	d := decide(base)
	d.allow == true
	d.required_reviews == one_approver
	d.max_duration_seconds == 14400
	d.scopes == ["clickhouse:system", "prometheus:read"]
	has_reason(d, "1 customer approver(s) of tenant acme must approve")
}

test_allow_exactly_max_duration if {
	d := decide(with_({"duration_seconds": 14400}))
	d.allow == true
}

test_allow_action_defaults_to_access if {
	d := decide(with_({"action": ""}))
	d.allow == true
	d.required_reviews == one_approver
}

test_allow_ticket_state_case_insensitive if {
	d := decide(with_({"ticket": {"state": "OPEN"}}))
	d.allow == true
}

test_allow_dev_mode_without_ticket if {
	d := decide(with_({"dev": true, "ticket": null}))
	d.allow == true
	d.required_reviews == one_approver
}

test_allow_dev_mode_with_unverified_closed_ticket if {
	d := decide(with_({"dev": true, "ticket": {"verified": false, "state": "closed"}}))
	d.allow == true
}

# Requester.

test_deny_non_engineer if {
	d := decide(with_({"requester": {"roles": ["reviewer"]}}))
	denied_with(d, "only engineers may request access: eve@vendor.example holds roles reviewer")
	count(d.reasons) == 1
}

test_deny_no_roles if {
	d := decide(with_({"requester": {"roles": null}}))
	denied_with(d, "holds no role")
}

test_deny_admin_may_not_request_access if {
	d := decide(with_({"requester": {"roles": ["admin"]}}))
	denied_with(d, "only engineers may request access")
}

test_deny_missing_requester if {
	d := decide(json.remove(base, ["requester"]))
	denied_with(d, "only engineers may request access: the requester holds no role")
}

# Ticket.

test_deny_no_ticket if {
	d := decide(with_({"ticket": null}))
	denied_with(d, "a ticket is required outside dev mode: cite one with --ticket owner/repo#N")
	count(d.reasons) == 1
}

test_deny_ticket_missing_dev_field if {
	d := decide(json.remove(with_({"ticket": null}), ["dev"]))
	denied_with(d, "a ticket is required outside dev mode")
}

test_deny_ticket_empty_ref if {
	d := decide(with_({"ticket": {"ref": ""}}))
	denied_with(d, "a ticket is required outside dev mode")
}

test_deny_ticket_unverified if {
	d := decide(with_({"ticket": {"verified": false}}))
	denied_with(d, "ticket acme/incidents#42 could not be verified on GitHub")
	count(d.reasons) == 1
}

test_deny_ticket_closed if {
	d := decide(with_({"ticket": {"state": "closed"}}))
	denied_with(d, "ticket acme/incidents#42 is closed, not open: reopen it or cite an open ticket")
	count(d.reasons) == 1
}

test_deny_ticket_without_state if {
	d := decide(with_({"ticket": {"state": ""}}))
	denied_with(d, "ticket acme/incidents#42 is in no state, not open")
}

test_deny_ticket_each_missing_piece_its_own_reason if {
	d := decide(with_({"ticket": {"verified": false, "state": "closed"}}))
	d.allow == false
	count(d.reasons) == 2
	has_reason(d, "could not be verified")
	has_reason(d, "is closed, not open")
}

# Scopes.

test_deny_unknown_scope if {
	d := decide(with_({"scopes": ["clickhouse:system", "clickhouse:write"]}))
	denied_with(d, "unknown scope clickhouse:write: ask for clickhouse:system and/or prometheus:read")
	count(d.reasons) == 1
	d.scopes == ["clickhouse:system"]
}

test_deny_no_scope if {
	d := decide(with_({"scopes": []}))
	denied_with(d, "no scope requested")
	d.scopes == []
}

test_deny_null_scopes if {
	d := decide(with_({"scopes": null}))
	denied_with(d, "no scope requested")
}

test_scopes_single if {
	d := decide(with_({"scopes": ["prometheus:read"]}))
	d.allow == true
	d.scopes == ["prometheus:read"]
}

test_scopes_duplicates_collapse if {
	d := decide(with_({"scopes": ["prometheus:read", "prometheus:read"]}))
	d.allow == true
	d.scopes == ["prometheus:read"]
}

# Duration.

test_deny_duration_too_long if {
	d := decide(with_({"duration_seconds": 14401}))
	denied_with(d, "requested duration 14401s exceeds the maximum of 14400s (4h) for access: ask for at most 4h")
	count(d.reasons) == 1
	d.max_duration_seconds == 14400
}

test_deny_duration_zero if {
	d := decide(with_({"duration_seconds": 0}))
	denied_with(d, "requested duration 0s is not positive")
}

test_deny_duration_missing if {
	d := decide(json.remove(base, ["duration_seconds"]))
	denied_with(d, "no duration requested: ask for at most 4h")
}

# No vendor-set auto-approval: the removed deployment.approval_mode
# "auto_prometheus" (an input from an older broker, or a stored setting) no
# longer spares prometheus:read a customer review. Where the customer wants
# none, its approvers sign a standing permit, checked outside this policy.

old_auto := with_({"deployment": {"approval_mode": "auto_prometheus"}, "scopes": ["prometheus:read"]})

test_prometheus_read_needs_a_customer_approver if {
	d := decide(with_({"scopes": ["prometheus:read"]}))
	d.allow == true
	d.required_reviews == one_approver
	has_reason(d, "1 customer approver(s) of tenant acme must approve")
}

test_old_auto_prometheus_mode_does_not_auto_approve if {
	d := decide(old_auto)
	d.allow == true
	d.required_reviews == one_approver
	not has_reason(d, "auto-approved")
}

test_old_auto_prometheus_mode_not_for_clickhouse if {
	d := decide(with_({"deployment": {"approval_mode": "auto_prometheus"}}))
	d.allow == true
	d.required_reviews == one_approver
}

test_old_auto_prometheus_mode_still_checks_ticket if {
	d := decide(object.union(old_auto, {"ticket": null}))
	denied_with(d, "a ticket is required")
}

# Freeze windows.

freeze := {"start": "2025-06-01T00:00:00Z", "end": "2025-06-02T00:00:00Z", "reason": "black friday"}

frozen := with_({"deployment": {"freeze_windows": [freeze]}})

test_freeze_requires_two_approvals if {
	d := decide(frozen)
	d.allow == true
	d.required_reviews == two_approvers
	has_reason(d, `freeze window "black friday" (2025-06-01T00:00:00Z to 2025-06-02T00:00:00Z) is in effect: 2 customer approvals are required`)
}

test_freeze_prometheus_read_needs_two_approvals if {
	d := decide(object.union(old_auto, {"deployment": {"freeze_windows": [freeze]}}))
	d.allow == true
	d.required_reviews == two_approvers
	has_reason(d, "2 customer approvals are required")
	not has_reason(d, "auto-approv")
}

test_freeze_start_is_inclusive if {
	d := decide(object.union(frozen, {"time": "2025-06-01T00:00:00Z"}))
	d.required_reviews == two_approvers
}

test_freeze_end_is_exclusive if {
	d := decide(object.union(frozen, {"time": "2025-06-02T00:00:00Z"}))
	d.required_reviews == one_approver
}

test_freeze_before_window if {
	d := decide(object.union(frozen, {"time": "2025-05-31T23:59:59.999Z"}))
	d.required_reviews == one_approver
}

test_freeze_one_of_several_windows if {
	past := {"start": "2025-01-01T00:00:00Z", "end": "2025-01-02T00:00:00Z", "reason": "past"}
	d := decide(with_({"deployment": {"freeze_windows": [past, freeze]}}))
	d.required_reviews == two_approvers
	has_reason(d, "black friday")
	not has_reason(d, "past")
}

test_freeze_unreadable_bound_is_open if {
	w := {"start": "0001-01-01T00:00:00Z", "end": "not a time", "reason": "open-ended"}
	d := decide(with_({"deployment": {"freeze_windows": [w]}}))
	d.required_reviews == two_approvers
}

test_freeze_missing_bounds_are_open if {
	d := decide(with_({"deployment": {"freeze_windows": [{"reason": "until further notice"}]}}))
	d.required_reviews == two_approvers
	has_reason(d, `freeze window "until further notice" (open to open)`)
}

test_freeze_uses_clock_without_input_time if {
	req := json.remove(frozen, ["time"])
	d := decide(req) with time.now_ns as 1748779200000000000 # 2025-06-01T12:00:00Z
	d.required_reviews == two_approvers
}

test_maintenance_window_changes_nothing if {
	d := decide(with_({"deployment": {"maintenance_windows": [freeze]}}))
	d.required_reviews == one_approver
}

# Break-glass.

sev1 := with_({"break_glass": true, "ticket": {"labels": ["SEV1"]}})

test_break_glass_with_sev1 if {
	d := decide(sev1)
	d.allow == true
	d.required_reviews == two_internal
	d.max_duration_seconds == 3600
	has_reason(d, "break-glass: two internal reviewers")
}

test_break_glass_without_sev1 if {
	d := decide(with_({"break_glass": true}))
	denied_with(d, "break-glass requires a ticket labelled sev1, and acme/incidents#42 is not")
	count(d.reasons) == 1
}

test_break_glass_without_ticket if {
	d := decide(with_({"break_glass": true, "ticket": null, "dev": true}))
	denied_with(d, "break-glass requires a ticket labelled sev1: cite the incident")
	count(d.reasons) == 1
}

test_break_glass_longer_than_1h if {
	d := decide(object.union(sev1, {"duration_seconds": 7200}))
	denied_with(d, "requested duration 7200s exceeds the maximum of 3600s (1h) for break-glass access")
}

test_break_glass_no_customer_review_during_freeze if {
	d := decide(object.union(sev1, {"deployment": {"freeze_windows": [freeze]}}))
	d.allow == true
	d.required_reviews == two_internal
	has_reason(d, "break-glass still asks no customer approval")
}

test_break_glass_prometheus_read_needs_internal_reviews if {
	d := decide(object.union(old_auto, {"break_glass": true, "ticket": {"labels": ["sev1"]}}))
	d.allow == true
	d.required_reviews == two_internal
}

test_break_glass_still_needs_engineer if {
	d := decide(object.union(sev1, {"requester": {"roles": ["reviewer"]}}))
	denied_with(d, "only engineers may request access")
}

# Network peering.

network := {
	"kind": "peering",
	"account_id": "222222222222",
	"region": "eu-west-1",
	"vpc_id": "vpc-0a1b2c3d4e5f67890",
	"role_arn": "arn:aws:iam::222222222222:role/tether-network",
	"route_table_ids": ["rtb-0a1b2c3d4e5f67890"],
	"outside_maintenance_window": false,
}

peering := with_({"action": "network:peering", "scopes": [], "duration_seconds": 86400, "network": network})

test_peering_engineer if {
	d := decide(peering)
	d.allow == true
	d.scopes == ["network:peering"]
	d.required_reviews == one_approver
	d.max_duration_seconds == 86400
}

test_peering_admin if {
	d := decide(object.union(peering, {"requester": {"roles": ["admin"]}}))
	d.allow == true
}

test_peering_with_its_scope if {
	d := decide(object.union(peering, {"scopes": ["network:peering"]}))
	d.allow == true
}

test_peering_reviewer_denied if {
	d := decide(object.union(peering, {"requester": {"roles": ["reviewer"]}}))
	denied_with(d, "only admins and engineers may request network peering")
}

test_peering_too_long if {
	d := decide(object.union(peering, {"duration_seconds": 86401}))
	denied_with(d, "requested duration 86401s exceeds the maximum of 86400s (24h) for network peering")
}

test_peering_needs_ticket if {
	d := decide(object.union(peering, {"ticket": null}))
	denied_with(d, "a ticket is required outside dev mode")
}

test_peering_other_scope if {
	d := decide(object.union(peering, {"scopes": ["clickhouse:system"]}))
	denied_with(d, "scope clickhouse:system cannot be part of a network:peering request")
}

test_peering_not_break_glass if {
	d := decide(object.union(peering, {"break_glass": true}))
	denied_with(d, "break-glass applies to access requests only")
}

test_peering_freeze if {
	d := decide(object.union(peering, {"deployment": {"freeze_windows": [freeze]}}))
	d.allow == true
	d.required_reviews == two_approvers
}

test_peering_ingress if {
	d := decide(object.union(peering, {"network": {"kind": "ingress"}}))
	d.allow == true
	d.required_reviews == one_approver
}

test_peering_outside_window_two_approvals if {
	d := decide(object.union(peering, {"network": {"outside_maintenance_window": true}}))
	d.allow == true
	d.required_reviews == two_approvers
	has_reason(d, "outside the maintenance windows of deployment acme-prod: 2 customer approvals are required")
}

test_peering_outside_window_unknown_is_outside if {
	d := decide(json.remove(peering, ["network/outside_maintenance_window"]))
	d.allow == true
	d.required_reviews == two_approvers
}

test_peering_outside_window_mistyped_is_outside if {
	d := decide(object.union(peering, {"network": {"outside_maintenance_window": "false"}}))
	d.required_reviews == two_approvers
}

test_peering_outside_window_during_freeze_still_two if {
	d := decide(object.union(peering, {"network": {"outside_maintenance_window": true}, "deployment": {"freeze_windows": [freeze]}}))
	d.allow == true
	d.required_reviews == two_approvers
}

test_peering_without_network_denied if {
	d := decide(json.remove(peering, ["network"]))
	denied_with(d, "a network:peering request must name its change")
	count(d.reasons) == 1
}

test_peering_null_network_denied if {
	d := decide(object.union(peering, {"network": null}))
	denied_with(d, "a network:peering request must name its change")
}

test_peering_unknown_kind_denied if {
	d := decide(object.union(peering, {"network": {"kind": "transit"}}))
	denied_with(d, "network kind transit: want peering or ingress")
	count(d.reasons) == 1
}

test_access_ignores_network_window if {
	d := decide(with_({"network": {"outside_maintenance_window": true}}))
	d.allow == true
	d.required_reviews == one_approver
}

# Other actions and deployments.

test_deny_unknown_action if {
	d := decide(with_({"action": "delete"}))
	denied_with(d, `unknown action "delete": ask for access or network:peering`)
	count(d.reasons) == 1
}

test_deny_deployment_without_tenant if {
	d := decide(with_({"deployment": {"tenant": ""}}))
	denied_with(d, "deployment acme-prod belongs to no tenant")
	d.required_reviews == []
}

test_many_problems_all_reported if {
	d := decide(with_({"requester": {"roles": []}, "ticket": null, "scopes": ["x"], "duration_seconds": 99999}))
	d.allow == false
	count(d.reasons) == 4
}

# The decision is always fully formed.

test_decision_shape_on_empty_input if {
	d := decide({})
	d.allow == false
	count(d.reasons) > 0
	is_array(d.required_reviews)
	d.max_duration_seconds > 0
	is_array(d.scopes)
}
