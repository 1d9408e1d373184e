package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/store"
)

// A deployment's settings have two owners. The vendor's admins set its
// labels and network (PUT …/settings). Its customer — the
// approvers of its tenant, and only they — set its freeze and maintenance
// windows (PUT …/customer-settings), which the access policy and network
// changes read: a vendor-side compromise must not lift a freeze the
// customer declared. Vendor staff read the customer's settings in the
// deployment's view; the vendor's route refuses windows that differ from
// the stored ones, so an old client cannot change them by accident either.
//
// The store replaces settings whole and offers no compare-and-swap for
// them, so both routes read, check and write under Broker.settingsMu: no
// change is lost between callers of one broker. Brokers sharing a database
// can still interleave between the read and the write.

var labelKeyRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$`)

const maxWindows = 100

// customerSettingsRoute is the route of the customer's settings; a vendor
// admin refused there is told whose they are ([forbiddenHint]).
const customerSettingsRoute = "PUT /api/v1/deployments/{tenant}/{name}/customer-settings"

// customerSettings are the settings a deployment's customer owns.
// Customer-signed standing permits belong here too: add them to this type,
// [customerOf], [customerSettings.applyTo], [customerFromAPI] and
// [customerSettings.view], and the vendor's route keeps them as it keeps
// the windows.
type customerSettings struct {
	FreezeWindows      []store.Window `json:"freeze_windows"`
	MaintenanceWindows []store.Window `json:"maintenance_windows"`
}

// customerOf is the customer's part of s.
func customerOf(s store.DeploymentSettings) customerSettings {
	return customerSettings{FreezeWindows: s.FreezeWindows, MaintenanceWindows: s.MaintenanceWindows}
}

// applyTo replaces the customer's part of s with c.
func (c customerSettings) applyTo(s *store.DeploymentSettings) {
	s.FreezeWindows, s.MaintenanceWindows = c.FreezeWindows, c.MaintenanceWindows
}

// normal is c as the store keeps it (UTC, to the millisecond), with empty
// lists for none, so that equal settings encode equally.
func (c customerSettings) normal() customerSettings {
	norm := func(ws []store.Window) []store.Window {
		out := make([]store.Window, 0, len(ws))
		for _, w := range ws {
			out = append(out, store.Window{Start: w.Start.UTC().Truncate(time.Millisecond), End: w.End.UTC().Truncate(time.Millisecond), Reason: w.Reason})
		}
		return out
	}
	return customerSettings{FreezeWindows: norm(c.FreezeWindows), MaintenanceWindows: norm(c.MaintenanceWindows)}
}

// version names c: a digest of its normal form. Equal settings have equal
// versions, so a writer that read version v changes nothing another made
// since, whatever happened in between.
func (c customerSettings) version() string {
	js, err := json.Marshal(c.normal())
	if err != nil {
		panic(fmt.Sprintf("encode customer settings: %v", err)) // plain values: cannot fail
	}
	sum := sha256.Sum256(js)
	return hex.EncodeToString(sum[:16])
}

func (c customerSettings) equal(o customerSettings) bool {
	return sameWindows(c.FreezeWindows, o.FreezeWindows) && sameWindows(c.MaintenanceWindows, o.MaintenanceWindows)
}

// sameWindows reports whether a and b are the same windows as the store
// keeps them (to the millisecond), in the same order.
func sameWindows(a, b []store.Window) bool {
	return slices.EqualFunc(a, b, func(x, y store.Window) bool {
		return x.Start.Truncate(time.Millisecond).Equal(y.Start.Truncate(time.Millisecond)) &&
			x.End.Truncate(time.Millisecond).Equal(y.End.Truncate(time.Millisecond)) && x.Reason == y.Reason
	})
}

func (c customerSettings) view() brokerapi.CustomerSettings {
	v := brokerapi.CustomerSettings{FreezeWindows: windowsView(c.FreezeWindows), MaintenanceWindows: windowsView(c.MaintenanceWindows), Version: c.version()}
	if v.FreezeWindows == nil {
		v.FreezeWindows = []brokerapi.Window{}
	}
	if v.MaintenanceWindows == nil {
		v.MaintenanceWindows = []brokerapi.Window{}
	}
	return v
}

func customerFromAPI(in brokerapi.CustomerSettings) (customerSettings, error) {
	var (
		c   customerSettings
		err error
	)
	if c.FreezeWindows, err = windowsFromAPI("freeze_windows", in.FreezeWindows); err != nil {
		return c, err
	}
	if c.MaintenanceWindows, err = windowsFromAPI("maintenance_windows", in.MaintenanceWindows); err != nil {
		return c, err
	}
	return c, nil
}

// forbiddenHint is what a caller refused for want of a role on the route
// of pattern is told besides the roles it needs.
func forbiddenHint(pattern string) string {
	if pattern == customerSettingsRoute {
		return ": a deployment's freeze and maintenance windows are its customer's to set, by an approver of its tenant; vendor staff read them ('broker deployment freeze list TENANT/NAME')"
	}
	return ""
}

func (b *Broker) handleGetCustomerSettings(w http.ResponseWriter, r *http.Request) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, customerOf(d.Settings).view())
	return nil
}

// handleSetCustomerSettings replaces the customer's settings of a
// deployment if they are still at the version the caller read. Only
// approvers of the deployment's tenant get here (the authorization
// table).
func (b *Broker) handleSetCustomerSettings(w http.ResponseWriter, r *http.Request) error {
	var in brokerapi.CustomerSettings
	if err := decodeJSON(w, r, brokerapi.MaxBody, &in); err != nil {
		return err
	}
	if in.Version == "" {
		return errorf(http.StatusBadRequest, "version_required", "give the version of the settings you changed (GET %s/customer-settings), so that a change made meanwhile is not lost", strings.TrimSuffix(r.URL.Path, "/customer-settings"))
	}
	want, err := customerFromAPI(in)
	if err != nil {
		return err
	}
	got, err := b.setCustomerSettings(r, in.Version, func(customerSettings) (customerSettings, error) { return want, nil })
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, got.view())
	return nil
}

// setCustomerSettings replaces the customer's settings of the deployment
// r names by change(current), if they are still at version; audited. The
// API and the web console both call it.
func (b *Broker) setCustomerSettings(r *http.Request, version string, change func(customerSettings) (customerSettings, error)) (customerSettings, error) {
	b.settingsMu.Lock()
	defer b.settingsMu.Unlock()
	d, err := b.lookup(r)
	if err != nil {
		return customerSettings{}, err
	}
	before := customerOf(d.Settings)
	if v := before.version(); v != version {
		return customerSettings{}, errorf(http.StatusConflict, "settings_changed", "the customer settings of %s/%s changed since you read them (version %s, now %s): read them again and make your change on what they are now", d.Tenant, d.Name, version, v)
	}
	want, err := change(before)
	if err != nil {
		return customerSettings{}, err
	}
	if want.equal(before) {
		return before, nil
	}
	s := d.Settings
	want.applyTo(&s)
	if err := b.record(r.Context(), audit.Event{
		Type: audit.DeploymentSettingsChanged, Actor: actorOf(r), Deployment: d.ID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success,
		Details: map[string]any{"owner": "customer", "before": before.normal(), "after": want.normal()},
	}); err != nil {
		return customerSettings{}, err
	}
	if err := b.store.SetDeploymentSettings(r.Context(), d.ID, s); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return customerSettings{}, errorf(http.StatusNotFound, "deployment_not_found", "no deployment %s/%s", d.Tenant, d.Name)
		}
		return customerSettings{}, fmt.Errorf("set customer settings: %w", err)
	}
	return want, nil
}

// handleSetSettings sets a deployment's vendor settings. Windows the body
// leaves out are kept; windows it gives must be the stored ones.
func (b *Broker) handleSetSettings(w http.ResponseWriter, r *http.Request) error {
	var in brokerapi.DeploymentSettings
	if err := decodeJSON(w, r, brokerapi.MaxBody, &in); err != nil {
		return err
	}
	s, err := settingsFromAPI(in)
	if err != nil {
		return err
	}
	b.settingsMu.Lock()
	defer b.settingsMu.Unlock()
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	stored := customerOf(d.Settings)
	for _, f := range []struct {
		name       string
		given      []brokerapi.Window
		got, have  []store.Window
		subcommand string
	}{
		{"freeze_windows", in.FreezeWindows, s.FreezeWindows, stored.FreezeWindows, "freeze"},
		{"maintenance_windows", in.MaintenanceWindows, s.MaintenanceWindows, stored.MaintenanceWindows, "maintenance"},
	} {
		if f.given != nil && !sameWindows(f.got, f.have) {
			return errorf(http.StatusForbidden, "customer_owned", "%s of %s/%s are the customer's to set: an approver of tenant %s changes them ('broker deployment %s add|remove %s/%s'); vendor staff may read them ('broker deployment %s list'), not change them. Leave %s out of the body to keep them",
				f.name, d.Tenant, d.Name, d.Tenant, f.subcommand, d.Tenant, d.Name, f.subcommand, f.name)
		}
	}
	stored.applyTo(&s)
	s.Permits = d.Settings.Permits // the customer's, signed by its approvers
	// A changed BYOC side must be registered to the deployment's tenant.
	if s.Network != nil && !reflect.DeepEqual(s.Network, d.Settings.Network) {
		if err := b.checkNetworkConfig(r.Context(), d.Tenant, s.Network); err != nil {
			return err
		}
	}
	if err := b.record(r.Context(), audit.Event{
		Type: audit.DeploymentSettingsChanged, Actor: actorOf(r), Deployment: d.ID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success,
		Details: map[string]any{"owner": "vendor", "settings": in},
	}); err != nil {
		return err
	}
	if err := b.store.SetDeploymentSettings(r.Context(), d.ID, s); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errorf(http.StatusNotFound, "deployment_not_found", "no deployment %s/%s", d.Tenant, d.Name)
		}
		return fmt.Errorf("set settings: %w", err)
	}
	d.Settings = s
	writeJSON(w, http.StatusOK, b.view(d))
	return nil
}

func settingsFromAPI(in brokerapi.DeploymentSettings) (store.DeploymentSettings, error) {
	s := store.DeploymentSettings{Labels: in.Labels}
	// The vendor no longer chooses which requests skip the customer's
	// approval. An older client may still send "customer", which changes
	// nothing; anything else is refused.
	switch in.ApprovalMode {
	case "", "customer":
	case "auto_prometheus":
		return s, errorf(http.StatusBadRequest, "invalid_approval_mode", "approval_mode auto_prometheus was removed: metrics reads without a per-request approval now need a standing permit the customer's approvers sign ('broker permit create')")
	default:
		return s, errorf(http.StatusBadRequest, "invalid_approval_mode", "approval_mode %q: the approval mode was removed (every request needs the customer's approval, or a standing permit the customer's approvers sign: 'broker permit create'); leave approval_mode out", in.ApprovalMode)
	}
	if len(in.Labels) > 64 {
		return s, errorf(http.StatusBadRequest, "invalid_labels", "%d labels: at most 64", len(in.Labels))
	}
	for k, v := range in.Labels {
		if !labelKeyRE.MatchString(k) || len(v) > 256 {
			return s, errorf(http.StatusBadRequest, "invalid_label", "label %q: want a key of a-z, 0-9, '.', '_', '/', '-' (at most 63) and a value of at most 256 characters", k)
		}
	}
	var err error
	if s.Network, err = networkFromAPI(in.Network); err != nil {
		return s, err
	}
	if s.FreezeWindows, err = windowsFromAPI("freeze_windows", in.FreezeWindows); err != nil {
		return s, err
	}
	if s.MaintenanceWindows, err = windowsFromAPI("maintenance_windows", in.MaintenanceWindows); err != nil {
		return s, err
	}
	return s, nil
}

// windowsFromAPI checks and converts the windows of field.
func windowsFromAPI(field string, ws []brokerapi.Window) ([]store.Window, error) {
	if len(ws) > maxWindows {
		return nil, errorf(http.StatusBadRequest, "invalid_window", "%s: at most %d windows", field, maxWindows)
	}
	var out []store.Window
	for i, w := range ws {
		if w.Start.IsZero() || w.End.IsZero() || !w.End.After(w.Start) {
			return nil, errorf(http.StatusBadRequest, "invalid_window", "%s[%d]: want a start before the end (RFC 3339 times)", field, i)
		}
		if len(w.Reason) > 500 {
			return nil, errorf(http.StatusBadRequest, "invalid_window", "%s[%d]: reason longer than 500 characters", field, i)
		}
		out = append(out, store.Window{Start: w.Start.UTC(), End: w.End.UTC(), Reason: w.Reason})
	}
	return out, nil
}

func windowsView(ws []store.Window) []brokerapi.Window {
	var out []brokerapi.Window
	for _, w := range ws {
		out = append(out, brokerapi.Window{Start: w.Start, End: w.End, Reason: w.Reason})
	}
	return out
}

// settingsView is the API form of a deployment's settings.
func settingsView(s store.DeploymentSettings) brokerapi.DeploymentSettings {
	v := brokerapi.DeploymentSettings{Labels: s.Labels, Network: networkView(s.Network)}
	v.FreezeWindows, v.MaintenanceWindows = windowsView(s.FreezeWindows), windowsView(s.MaintenanceWindows)
	return v
}
