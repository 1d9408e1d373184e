# Package tether.access is Tether's default access policy. The broker asks it
# one question per request, data.tether.access.decision: may this requester
# have this access to this deployment, whose reviews must they collect first,
# and for how long at most.
#
# Input (policy.Input in Go; every field is always present when the broker
# asks, but the policy treats a missing or mistyped field as the strictest
# case):
#
#   requester            who asks
#     subject, email, issuer, tenant   from the verified ID token; tenant is
#                                      "" for the vendor issuer
#     roles, groups                    e.g. ["engineer"]
#     github_login, github_teams
#   deployment           what they ask for
#     id, tenant, name, region, labels
#     freeze_windows                   [{start, end, reason}], RFC 3339 times;
#                                      in effect when start <= time < end
#     maintenance_windows              same shape; not used by this policy
#   ticket               null when none is cited, else
#     ref, verified, state, labels, assignees   as read from GitHub
#   scopes               requested, e.g. ["clickhouse:system", "prometheus:read"]
#   duration_seconds     requested
#   break_glass          emergency access (needs a sev1 ticket)
#   dev                  the broker runs in dev mode (no ticket needed)
#   time                 evaluation time, RFC 3339 (also time.now_ns())
#   action               "access" (default when empty) or "network:peering"
#   network              null for access; for network:peering the change:
#     kind                             "peering" or "ingress"
#     account_id, region, vpc_id       the peer's AWS account, region and VPC
#     role_arn                         the role Tether assumes there
#     route_table_ids                  peer route tables; empty means all
#     outside_maintenance_window       true to change it outside the
#                                      deployment's maintenance windows
#
# Output:
#
#   decision := {
#     "allow":                bool,
#     "reasons":              [string]: why not, one actionable line per
#                             problem; when allowed, what happens next,
#     "required_reviews":     [{"tenant", "role", "count"}]: reviews that must
#                             approve before the grant; role "approver" is a
#                             customer approver of tenant, role "internal" a
#                             vendor reviewer or admin (tenant ""); never
#                             empty for an allowed request (a customer's
#                             standing permit, checked outside this policy,
#                             stands in for a customer approval),
#     "max_duration_seconds": number > 0,
#     "scopes":               [string]: what would be granted: requested ∩
#                             {clickhouse:system, prometheus:read} for access,
#                             ["network:peering"] for peering,
#   }
#
# Rules, in short: only engineers ask for access (admins and engineers for
# network peering); outside dev mode the ticket must exist, be verified and be
# open; durations are capped at 4h (break-glass 1h, peering 24h); one customer
# approver of the deployment's tenant approves, two during a freeze window or
# for a network change outside the maintenance windows; no access request
# goes without a review by this policy (where the customer wants none, its
# approvers sign a standing permit, which the broker and the agent check);
# a network:peering request must name its change (network.kind);
# break-glass needs a ticket labelled sev1 and two internal reviewers instead
# of any customer approval.
#
# Every check is written twice on purpose: as a condition that allow requires
# (all_checks_pass) and as a message in problems explaining its failure. A
# message that fails to build can then never let a request through, and an
# allowed request never pays for building messages.
package tether.access

# Performance: every rule a decision reads costs an evaluation and its
# allocations, and the broker asks on every request. So the checks read the
# input directly and use literals; the named pieces further down (has_ticket,
# ticket_state, who, …) serve the messages, which only denials build.

allowed_scopes := {"clickhouse:system", "prometheus:read"}

scope_hint := "ask for clickhouse:system and/or prometheus:read"

# Input. Rules read input fields directly: a missing, null or mistyped field
# leaves the rule that reads it undefined, and every check below is written
# so that undefined means "not satisfied".
#
# Beware `not f(x.y)` where x.y may be undefined: OPA evaluates the argument
# outside the negation, so the whole expression fails instead of succeeding.
# Negate a rule (`not duration_given`) or pass a defined value (object.get).

requested := {s | some s in input.scopes}

access if input.action == "access"

access if input.action == ""

access if not input.action

peering if input.action == "network:peering"

known_action if access

known_action if peering

break_glass if input.break_glass == true

dev if input.dev == true

tenant := input.deployment.tenant if {
	is_string(input.deployment.tenant)
	input.deployment.tenant != ""
}

# The evaluation time: input.time, so that a logged input replays to the same
# decision, else the evaluation clock.
now_ns := time.parse_rfc3339_ns(input.time) if {
	is_string(input.time)
} else := time.now_ns()

# Ticket, by piece, for the messages (ticket_ok checks them in one go).

has_ticket if {
	is_string(input.ticket.ref)
	input.ticket.ref != ""
}

ticket_verified if input.ticket.verified == true

ticket_open if lower(input.ticket.state) == "open"

ticket_labels := {lower(l) | some l in input.ticket.labels; is_string(l)}

ticket_required if not dev

# Freeze windows: in effect when start <= time < end. A bound that is missing
# or unreadable counts as open on its side, so a malformed window freezes
# rather than lapses.

readable_time(t) if {
	_ = time.parse_rfc3339_ns(t)
}

window_started(w) if time.parse_rfc3339_ns(w.start) <= now_ns

window_started(w) if not readable_time(object.get(w, "start", null))

window_not_ended(w) if now_ns < time.parse_rfc3339_ns(w.end)

window_not_ended(w) if not readable_time(object.get(w, "end", null))

active_freezes contains w if {
	some w in input.deployment.freeze_windows
	is_object(w)
	window_started(w)
	window_not_ended(w)
}

frozen if count(active_freezes) > 0

# Checks. Each *_ok rule is required by allow; problems below explains each.

requester_ok if {
	access
	"engineer" in input.requester.roles
}

requester_ok if {
	peering
	some r in input.requester.roles
	r in {"admin", "engineer"}
}

ticket_ok if input.dev == true

ticket_ok if {
	input.ticket.verified == true
	lower(input.ticket.state) == "open"
	is_string(input.ticket.ref)
	input.ticket.ref != ""
}

scopes_ok if {
	access
	count(requested) > 0
	count(requested - allowed_scopes) == 0
}

scopes_ok if {
	peering
	count(requested - {"network:peering"}) == 0
}

duration_given if is_number(input.duration_seconds)

duration_ok if {
	input.duration_seconds > 0
	input.duration_seconds <= max_duration_seconds
	duration_given
}

# A network change must say what it changes: the approvers and this policy
# decide on the peer it names.
network_ok if not peering

network_ok if {
	peering
	input.network.kind in {"peering", "ingress"}
}

# A network change inside the maintenance windows says so explicitly;
# anything else (true, missing, mistyped) is outside, the stricter case.
in_window_change if input.network.outside_maintenance_window == false

outside_window_change if {
	peering
	not in_window_change
}

break_glass_ok if not break_glass

break_glass_ok if {
	access
	"sev1" in ticket_labels
}

all_checks_pass if {
	requester_ok
	ticket_ok
	scopes_ok
	duration_ok
	break_glass_ok
	network_ok
	tenant
}

# Problems: one message per failed check, each saying what to do about it.
# Each rule opens with the check it explains. They are evaluated only for a
# request that fails a check (see reasons), and the values they quote are built
# only then.

# limit_text and limit_what name the duration limit in messages.
limit_text := sprintf("%dh", [max_duration_seconds / 3600])

limit_what := "break-glass access" if {
	break_glass
	access
} else := "network peering" if {
	peering
} else := "access"

who := input.requester.email if {
	is_string(input.requester.email)
	input.requester.email != ""
} else := input.requester.subject if {
	is_string(input.requester.subject)
	input.requester.subject != ""
} else := "the requester"

roles := {r | some r in input.requester.roles; is_string(r)}

roles_text := sprintf("roles %s", [concat(", ", sort(roles))]) if {
	count(roles) > 0
} else := "no role"

deployment_name := input.deployment.name if {
	is_string(input.deployment.name)
	input.deployment.name != ""
} else := input.deployment.id if {
	is_string(input.deployment.id)
	input.deployment.id != ""
} else := "(unnamed)"

ticket_state := input.ticket.state if {
	is_string(input.ticket.state)
	input.ticket.state != ""
} else := "in no state"

action := input.action if {
	is_string(input.action)
	input.action != ""
} else := "access"

problems contains msg if {
	not known_action
	msg := sprintf("unknown action %q: ask for access or network:peering", [action])
}

problems contains msg if {
	not requester_ok
	access
	msg := sprintf("only engineers may request access: %s holds %s; ask a Tether admin for the engineer role", [who, roles_text])
}

problems contains msg if {
	not requester_ok
	peering
	msg := sprintf("only admins and engineers may request network peering: %s holds %s; ask a Tether admin for one of those roles", [who, roles_text])
}

problems contains "a ticket is required outside dev mode: cite one with --ticket owner/repo#N" if {
	not ticket_ok
	not has_ticket
}

problems contains msg if {
	not ticket_ok
	has_ticket
	not ticket_verified
	msg := sprintf("ticket %s could not be verified on GitHub: check the reference and that the broker's GitHub credentials can read its repository, then ask again", [input.ticket.ref])
}

problems contains msg if {
	not ticket_ok
	has_ticket
	not ticket_open
	msg := sprintf("ticket %s is %v, not open: reopen it or cite an open ticket", [input.ticket.ref, ticket_state])
}

problems contains msg if {
	not scopes_ok
	access
	count(requested) == 0
	msg := sprintf("no scope requested: %s", [scope_hint])
}

problems contains msg if {
	not scopes_ok
	access
	some s in requested
	not s in allowed_scopes
	msg := sprintf("unknown scope %v: %s", [s, scope_hint])
}

problems contains msg if {
	not scopes_ok
	peering
	some s in requested
	s != "network:peering"
	msg := sprintf("scope %v cannot be part of a network:peering request: ask for network:peering alone, and for access separately", [s])
}

problems contains msg if {
	not duration_ok
	not duration_given
	msg := sprintf("no duration requested: ask for at most %s", [limit_text])
}

problems contains msg if {
	not duration_ok
	input.duration_seconds <= 0
	msg := sprintf("requested duration %vs is not positive: ask for at most %s", [input.duration_seconds, limit_text])
}

problems contains msg if {
	not duration_ok
	input.duration_seconds > max_duration_seconds
	msg := sprintf("requested duration %vs exceeds the maximum of %vs (%s) for %s: ask for at most %s", [input.duration_seconds, max_duration_seconds, limit_text, limit_what, limit_text])
}

problems contains msg if {
	not break_glass_ok
	access
	not has_ticket
	msg := "break-glass requires a ticket labelled sev1: cite the incident with --ticket owner/repo#N and label it sev1"
}

problems contains msg if {
	not break_glass_ok
	access
	has_ticket
	msg := sprintf("break-glass requires a ticket labelled sev1, and %s is not: label it sev1 if it is one, or ask without break-glass", [input.ticket.ref])
}

problems contains "break-glass applies to access requests only: ask for network peering without it" if {
	not break_glass_ok
	not access
}

problems contains msg if {
	not network_ok
	not is_object(object.get(input, "network", null))
	msg := "a network:peering request must name its change: give network.kind (peering or ingress) and the peer's account_id, region, vpc_id and role_arn"
}

problems contains msg if {
	not network_ok
	is_object(input.network)
	msg := sprintf("network kind %v: want peering or ingress", [object.get(input.network, "kind", "(none)")])
}

problems contains msg if {
	not tenant
	msg := sprintf("deployment %s belongs to no tenant, so no customer can approve access to it: ask a Tether admin to fix its registration", [deployment_name])
}

# Reviews and limits.

customer_approvals := 2 if frozen else := 2 if outside_window_change else := 1

required_reviews := [{"tenant": "", "role": "internal", "count": 2}] if {
	break_glass
	access
} else := [{"tenant": tenant, "role": "approver", "count": customer_approvals}] if {
	tenant
} else := []

# The longest grant: 1h for break-glass, 24h for network peering, 4h for
# access.
max_duration_seconds := 3600 if {
	break_glass
	access
} else := 86400 if {
	peering
} else := 14400

granted_scopes := ["network:peering"] if {
	peering
} else := sort(requested & allowed_scopes) if {
	access
} else := []

# Notes for an allowed request: what happens next.

window_text(w) := sprintf("%q (%v to %v)", [
	object.get(w, "reason", "unnamed"),
	object.get(w, "start", "open"),
	object.get(w, "end", "open"),
])

review_note := "break-glass: two internal reviewers (vendor reviewers or admins) must approve; no customer approval is asked; access lasts at most 1h" if {
	break_glass
} else := sprintf("%d customer approver(s) of tenant %s must approve", [customer_approvals, tenant])

notes contains review_note

notes contains msg if {
	frozen
	some w in active_freezes
	not break_glass
	msg := sprintf("freeze window %s is in effect: %d customer approvals are required", [window_text(w), customer_approvals])
}

notes contains msg if {
	frozen
	some w in active_freezes
	break_glass
	msg := sprintf("freeze window %s is in effect; break-glass still asks no customer approval", [window_text(w)])
}

notes contains msg if {
	outside_window_change
	msg := sprintf("the network change is to be made outside the maintenance windows of deployment %s: %d customer approvals are required", [deployment_name, customer_approvals])
}

# The decision. allow rests on the checks alone; problems explain a failure.
# The two must agree, which the tests assert for every input they try: a new
# restriction is a condition in all_checks_pass and a message in problems.

default allow := false

allow if all_checks_pass

reasons := sort(problems) if {
	not allow
	count(problems) > 0
} else := ["denied by a check that could not explain itself: report this policy bug to the Tether admins"] if {
	not allow
} else := sort(notes)

decision := {
	"allow": allow,
	"reasons": reasons,
	"required_reviews": required_reviews,
	"max_duration_seconds": max_duration_seconds,
	"scopes": granted_scopes,
}
