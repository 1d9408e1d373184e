package broker

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/tetherhq/tether/internal/brokerapi"
)

// The admin's pages of the web console: the deployments with their
// agents' status, a deployment's page, creating a deployment, a new
// pairing token, revoking an agent. Each form calls the function its API
// endpoint calls, so the audit events are the API's.

const (
	createDeploymentRoute = "POST /api/v1/deployments"
	pairingTokenRoute     = "POST /api/v1/deployments/{tenant}/{name}/pairing-tokens"
	revokeAgentRoute      = "POST /api/v1/deployments/{tenant}/{name}/revoke-agent"
)

// deploymentRow is a deployment as the list shows it.
type deploymentRow struct {
	D        brokerapi.Deployment
	Path     string // its page
	LastSeen string
}

// deploymentPath is the console page of tenant/name.
func deploymentPath(tenant, name string) string {
	return "/ui/deployments/" + url.PathEscape(tenant) + "/" + url.PathEscape(name)
}

// uiDeployments lists the deployments the caller may see (all of them
// for vendor staff, its own tenant's for a customer's approver, as the
// API lists them) with their agents' status.
func (b *Broker) uiDeployments(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	ds, err := b.store.ListDeployments(r.Context())
	if err != nil {
		return fmt.Errorf("list deployments: %w", err)
	}
	now := b.now()
	var rows []deploymentRow
	for _, d := range ds {
		if !p.CanActOnTenant(d.Tenant) {
			continue
		}
		v := b.view(d)
		row := deploymentRow{D: v, Path: deploymentPath(v.Tenant, v.Name)}
		if v.Agent != nil && v.Agent.LastSeen != nil {
			row.LastSeen = age(now, *v.Agent.LastSeen) + " ago"
		}
		rows = append(rows, row)
	}
	b.render(w, r, http.StatusOK, "deployments", "Deployments and agents", map[string]any{
		"Rows": rows, "Tenant": p.Tenant, "Create": mayCall(createDeploymentRoute, p.HasRole) && p.Tenant == "",
	})
	return nil
}

// uiCreateDeployment creates a deployment and shows its first pairing
// token, once.
func (b *Broker) uiCreateDeployment(w http.ResponseWriter, r *http.Request) error {
	req := brokerapi.CreateDeploymentRequest{
		Tenant: strings.TrimSpace(r.PostForm.Get("tenant")),
		Name:   strings.TrimSpace(r.PostForm.Get("name")),
		Region: strings.TrimSpace(r.PostForm.Get("region")),
	}
	res, err := b.createDeployment(r, req)
	if err != nil {
		return err
	}
	b.showToken(w, r, http.StatusCreated, res.Deployment, res.Pairing, true)
	return nil
}

// uiPairingToken issues a new pairing token and shows it, once.
func (b *Broker) uiPairingToken(w http.ResponseWriter, r *http.Request) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	tok, err := b.issuePairingToken(r, d)
	if err != nil {
		return err
	}
	b.showToken(w, r, http.StatusCreated, b.view(d), tok, false)
	return nil
}

// showToken shows a pairing token with how to use it, as the CLI prints
// it. The token is in this response only (no-store); the broker keeps
// its hash.
func (b *Broker) showToken(w http.ResponseWriter, r *http.Request, status int, d brokerapi.Deployment, tok brokerapi.PairingToken, created bool) {
	b.render(w, r, status, "token", "Pairing token for "+d.Tenant+"/"+d.Name, map[string]any{
		"D": d, "Path": deploymentPath(d.Tenant, d.Name), "Token": tok.Token, "ExpiresAt": tok.ExpiresAt, "Created": created,
	})
}

// uiRevokeAgent revokes a deployment's agent, with a reason.
func (b *Broker) uiRevokeAgent(w http.ResponseWriter, r *http.Request) error {
	reason, err := formComment(r, "reason")
	if err != nil {
		return err
	}
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	if _, err := b.revokeAgent(r, d, reason); err != nil {
		return err
	}
	http.Redirect(w, r, deploymentPath(d.Tenant, d.Name)+"?done=agent-revoked", http.StatusSeeOther)
	return nil
}

// deploymentPage is what a deployment's page shows.
type deploymentPage struct {
	D        brokerapi.Deployment
	Path     string
	LastSeen string
	Customer brokerapi.CustomerSettings
	Windows  []windowGroup
	Permits  []brokerapi.Permit
	Scopes   []string // a new permit's choices

	Pair, RevokeAgent bool // admin forms
	// OwnsSettings: the caller is an approver of the tenant, who sets
	// its windows and signs its permits; vendor staff only read them.
	OwnsSettings bool
}

// windowGroup is one kind of the customer's windows, as the page lists
// them.
type windowGroup struct {
	Kind, Title string
	W           []brokerapi.Window
}

// uiDeployment shows a deployment: its agent, the customer's windows and
// permits, and the forms the caller may use.
func (b *Broker) uiDeployment(w http.ResponseWriter, r *http.Request) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	p := principalFrom(r.Context())
	pg := deploymentPage{D: b.view(d), Path: deploymentPath(d.Tenant, d.Name), Customer: customerOf(d.Settings).view(), Scopes: permitScopes()}
	if pg.D.Agent != nil && pg.D.Agent.LastSeen != nil {
		pg.LastSeen = age(b.now(), *pg.D.Agent.LastSeen) + " ago"
	}
	pg.Windows = []windowGroup{{"freeze", "Freeze windows", pg.Customer.FreezeWindows}, {"maintenance", "Maintenance windows", pg.Customer.MaintenanceWindows}}
	for _, sp := range d.Settings.Permits {
		pg.Permits = append(pg.Permits, permitView(sp))
	}
	pg.Pair = mayCall(pairingTokenRoute, p.HasRole)
	pg.RevokeAgent = d.Agent != nil && mayCall(revokeAgentRoute, p.HasRole)
	pg.OwnsSettings = p.Tenant == d.Tenant && mayCall(customerSettingsRoute, p.HasRole)
	b.render(w, r, http.StatusOK, "deployment", d.Tenant+"/"+d.Name, pg)
	return nil
}
