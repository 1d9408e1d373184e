package broker

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/access"
	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/source/registry"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/weblogin"
	"github.com/tetherhq/tether/internal/webui"
)

// The approver's remaining pages: active grants with revoke, the history
// of decided requests, and the settings a deployment's customer owns —
// freeze and maintenance windows (version-checked, through the code of
// PUT …/customer-settings) and standing permits, signed in the browser
// by the same ceremony as an approval and stored by the code of
// POST …/permits.

const signPermitRoute = "POST /api/v1/deployments/{tenant}/{name}/permits"

// settingsNav are the navigation's links to the pages of this file and
// of ui_admin.go: the deployments and agents for vendor admins, the
// tenant's grants and history for a customer's approvers.
func settingsNav(p identity.Principal, path string) []webui.NavItem {
	var items []webui.NavItem
	if p.Tenant == "" && p.HasRole(names.RoleAdmin) {
		items = append(items, webui.NavItem{Path: "/ui/deployments", Text: "Agents"})
	}
	if p.Tenant != "" && p.HasRole(names.RoleApprover) {
		items = append(items, webui.NavItem{Path: "/ui/deployments", Text: "Settings"}, webui.NavItem{Path: "/ui/tenant-grants", Text: "Active grants"}, webui.NavItem{Path: "/ui/history", Text: "History"})
	}
	for i := range items {
		items[i].Current = path == items[i].Path
	}
	return items
}

// permitScopes are the scopes a permit may name.
func permitScopes() []string { return registry.Scopes() }

// tenantGrantRow is an active request as the grants page lists it.
type tenantGrantRow struct {
	ID, Short, Engineer, Deployment, Reason string
	Scopes                                  []string
	Until                                   time.Time
	Revoke                                  bool
	Replay                                  string // its session replay, when the caller may open it
}

// uiTenantGrants lists the active grants the caller may see (a customer's
// approver: their tenant's), each with the request page's revoke form.
func (b *Broker) uiTenantGrants(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p := principalFrom(ctx)
	ars, err := b.visibleRequests(ctx, p, store.RequestFilter{States: []string{store.StateActive, store.StateApproved}, Limit: inboxMax})
	if err != nil {
		return err
	}
	rows := make([]tenantGrantRow, 0, len(ars))
	for _, ar := range ars {
		row := tenantGrantRow{ID: ar.ID, Short: shortID(ar.ID), Engineer: displayName(ar.Requester), Deployment: ar.Tenant + "/" + ar.Name,
			Reason: ar.Reason, Scopes: ar.Scopes, Revoke: mayRevoke(p, ar), Replay: b.replayPath(ctx, p, ar.Tenant, ar.ID)}
		if ar.Grant != nil {
			row.Scopes, row.Until = ar.Grant.Scopes, ar.Grant.Expiry
		}
		rows = append(rows, row)
	}
	b.render(w, r, http.StatusOK, "tenantgrants", "Active grants", map[string]any{"Rows": rows, "Tenant": p.Tenant, "Truncated": len(ars) >= inboxMax, "Max": inboxMax})
	return nil
}

// mayRevoke reports whether p may revoke ar, as the request page offers
// it: its engineer, an approver of its tenant, or vendor staff.
func mayRevoke(p identity.Principal, ar store.AccessRequest) bool {
	me := person(p)
	return mayCall(revokeRoute, p.HasRole) &&
		(access.SamePerson(me, ar.Requester) || (me.Tenant == ar.Tenant && slices.Contains(p.Roles, names.RoleApprover)) || access.IsInternal(me))
}

// decidedStates are the states of a request someone or the policy
// decided.
var decidedStates = []string{store.StateApproved, store.StateActive, store.StateExpired, store.StateRevoked, store.StateDenied}

type historyRow struct {
	ID, Short, Engineer, Deployment, Reason, State, EndReason string
	Scopes                                                    []string
	Created, Ended                                            time.Time
}

// uiHistory lists the decided requests the caller may see, newest first,
// [inboxPageSize] a page.
func (b *Broker) uiHistory(w http.ResponseWriter, r *http.Request) error {
	ars, data, err := b.uiRequestPage(r, decidedStates)
	if err != nil {
		return err
	}
	rows := make([]historyRow, 0, len(ars))
	for _, ar := range ars {
		rows = append(rows, historyRow{ID: ar.ID, Short: shortID(ar.ID), Engineer: displayName(ar.Requester), Deployment: ar.Tenant + "/" + ar.Name,
			Reason: ar.Reason, State: ar.State, EndReason: ar.EndReason, Scopes: ar.Scopes, Created: ar.CreatedAt, Ended: ar.EndedAt})
	}
	data["Rows"] = rows
	b.render(w, r, http.StatusOK, "history", "History", data)
	return nil
}

// formTime reads a time field: RFC 3339, or a browser's
// datetime-local value (2006-01-02T15:04), taken as UTC.
func formTime(r *http.Request, field string) (time.Time, error) {
	s := strings.TrimSpace(r.PostForm.Get(field))
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errorf(http.StatusBadRequest, "invalid_window", "%s %q: want a time such as 2026-12-24T18:00 (UTC) or RFC 3339", field, truncate(s, 40))
}

// windowList is the customer's list of windows the form's kind names.
func windowList(c *customerSettings, kind string) (*[]store.Window, error) {
	switch kind {
	case "freeze":
		return &c.FreezeWindows, nil
	case "maintenance":
		return &c.MaintenanceWindows, nil
	}
	return nil, errorf(http.StatusBadRequest, "invalid_window", "kind %q: want freeze or maintenance", truncate(kind, 20))
}

// uiAddWindow adds a freeze or maintenance window, if the customer's
// settings are still at the version the page showed.
func (b *Broker) uiAddWindow(w http.ResponseWriter, r *http.Request) error {
	kind := r.PostForm.Get("kind")
	start, err := formTime(r, "start")
	if err != nil {
		return err
	}
	end, err := formTime(r, "end")
	if err != nil {
		return err
	}
	reason, err := formComment(r, "reason")
	if err != nil {
		return err
	}
	add, err := windowsFromAPI(kind+"_windows", []brokerapi.Window{{Start: start, End: end, Reason: reason}})
	if err != nil {
		return err
	}
	if _, err := b.setCustomerSettings(r, r.PostForm.Get("version"), func(c customerSettings) (customerSettings, error) {
		list, err := windowList(&c, kind)
		if err != nil {
			return c, err
		}
		if len(*list) >= maxWindows {
			return c, errorf(http.StatusBadRequest, "invalid_window", "%s windows: at most %d; remove one first", kind, maxWindows)
		}
		*list = append(slices.Clone(*list), add...)
		return c, nil
	}); err != nil {
		return err
	}
	http.Redirect(w, r, deploymentPath(r.PathValue("tenant"), r.PathValue("name"))+"?done=window-added", http.StatusSeeOther)
	return nil
}

// uiRemoveWindow removes the window at index of its kind, if the
// settings are still at the version the page showed (so the index names
// the window the person saw).
func (b *Broker) uiRemoveWindow(w http.ResponseWriter, r *http.Request) error {
	kind := r.PostForm.Get("kind")
	i, err := strconv.Atoi(r.PostForm.Get("index"))
	if err != nil {
		return errorf(http.StatusBadRequest, "invalid_window", "index %q: want the number of a listed window", truncate(r.PostForm.Get("index"), 20))
	}
	if _, err := b.setCustomerSettings(r, r.PostForm.Get("version"), func(c customerSettings) (customerSettings, error) {
		list, err := windowList(&c, kind)
		if err != nil {
			return c, err
		}
		if i < 0 || i >= len(*list) {
			return c, errorf(http.StatusBadRequest, "invalid_window", "%s window %d: there are %d", kind, i, len(*list))
		}
		*list = slices.Delete(slices.Clone(*list), i, i+1)
		return c, nil
	}); err != nil {
		return err
	}
	http.Redirect(w, r, deploymentPath(r.PathValue("tenant"), r.PathValue("name"))+"?done=window-removed", http.StatusSeeOther)
	return nil
}

// permitCeremony is what a pending permit-signing ceremony carries to
// its callback.
type permitCeremony struct {
	Tenant, Name string
	Permit       string // canonical
}

// uiSignPermit begins signing a new permit (from the form's terms) or
// co-signing a stored one (id): the broker states the permit, keeps a
// pending ceremony bound to the session whose nonce is the permit's
// digest, and shows the permit with a link to the approver's identity
// provider; [Broker.uiPermitSigned] stores the signature.
func (b *Broker) uiSignPermit(w http.ResponseWriter, r *http.Request) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	in := brokerapi.PermitStatementBody{ID: strings.TrimSpace(r.PostForm.Get("id"))}
	if in.ID == "" {
		in.Scopes = r.PostForm["scope"]
		in.EngineerGroup = strings.TrimSpace(r.PostForm.Get("engineer_group"))
		in.MaxGrant = strings.TrimSpace(r.PostForm.Get("max_grant"))
		start, err := formTime(r, "start")
		if err != nil {
			return err
		}
		end, err := formTime(r, "end")
		if err != nil {
			return err
		}
		in.Windows = []brokerapi.PermitWindow{{Start: start, End: end}}
	}
	canon, _, err := b.permitToSign(d, in)
	if err != nil {
		return err
	}
	digest := approval.Digest(canon)
	authURL, err := b.web.BeginCeremony(w, r, weblogin.Ceremony{Nonce: digest, Data: permitCeremony{Tenant: d.Tenant, Name: d.Name, Permit: string(canon)}})
	if err != nil {
		if errors.Is(err, weblogin.ErrNoSession) {
			return errorf(http.StatusUnauthorized, "unauthenticated", "your session ended: sign in again, then sign the permit again")
		}
		b.log.Warn("begin permit signing", "deployment", d.Tenant+"/"+d.Name, "err", err)
		return errorf(http.StatusServiceUnavailable, "idp_unavailable", "your identity provider could not be reached to sign the permit: try again in a moment")
	}
	view := permitView(store.Permit{Canonical: string(canon)})
	b.render(w, r, http.StatusOK, "permitsign", "Sign a standing permit", map[string]any{
		"Deployment": d.Tenant + "/" + d.Name, "Path": deploymentPath(d.Tenant, d.Name), "P": view, "CoSign": in.ID != "",
		"Canonical": string(canon), "Digest": digest, "Issuer": principalFrom(r.Context()).IssuerName, "AuthURL": authURL,
	})
	return nil
}

// uiPermitSigned completes a permit's signing ceremony: weblogin
// verified the ID token (the session's provider and user, the permit's
// digest as nonce); the caller is authorized again for POST …/permits
// and the signature stored by its code ([Broker.signPermit]), which
// checks the proof and audits as for the API.
func (b *Broker) uiPermitSigned(w http.ResponseWriter, r *http.Request, p identity.Principal, proof string, c permitCeremony) {
	r.SetPathValue("tenant", c.Tenant)
	r.SetPathValue("name", c.Name)
	e, _ := endpointRow(signPermitRoute)
	if err := b.permit(r, e, p); err != nil {
		b.uiAnswer(w, r, actor(p, ""), err)
		return
	}
	r = withPrincipal(r, p, e)
	if _, err := b.signPermit(r, brokerapi.SignPermitBody{Permit: c.Permit, Proof: proof}); err != nil {
		b.uiAnswer(w, r, callerOf(r), err)
		return
	}
	http.Redirect(w, r, deploymentPath(c.Tenant, c.Name)+"?done=permit-signed", http.StatusSeeOther)
}

// uiRevokePermit revokes a permit: no new grant is issued under it.
func (b *Broker) uiRevokePermit(w http.ResponseWriter, r *http.Request) error {
	if _, err := b.revokePermit(r, r.PathValue("permit")); err != nil {
		return err
	}
	http.Redirect(w, r, deploymentPath(r.PathValue("tenant"), r.PathValue("name"))+"?done=permit-revoked", http.StatusSeeOther)
	return nil
}
