package broker

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"regexp"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/store"
)

var labelKeyRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$`)

const maxWindows = 100

func (b *Broker) handleSetSettings(w http.ResponseWriter, r *http.Request) error {
	var in brokerapi.DeploymentSettings
	if err := decodeJSON(w, r, brokerapi.MaxBody, &in); err != nil {
		return err
	}
	s, err := settingsFromAPI(in)
	if err != nil {
		return err
	}
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	// A changed BYOC side must be registered to the deployment's tenant.
	if s.Network != nil && !reflect.DeepEqual(s.Network, d.Settings.Network) {
		if err := b.checkNetworkConfig(r.Context(), d.Tenant, s.Network); err != nil {
			return err
		}
	}
	if err := b.record(r.Context(), audit.Event{
		Type: audit.DeploymentSettingsChanged, Actor: actorOf(r), Deployment: d.ID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success,
		Details: map[string]any{"settings": in},
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
	s := store.DeploymentSettings{Labels: in.Labels, ApprovalMode: in.ApprovalMode}
	switch in.ApprovalMode {
	case "", "customer", "auto_prometheus":
	default:
		return s, errorf(http.StatusBadRequest, "invalid_approval_mode", "approval_mode %q: want customer or auto_prometheus", in.ApprovalMode)
	}
	if len(in.Labels) > 64 {
		return s, errorf(http.StatusBadRequest, "invalid_labels", "%d labels: at most 64", len(in.Labels))
	}
	for k, v := range in.Labels {
		if !labelKeyRE.MatchString(k) || len(v) > 256 {
			return s, errorf(http.StatusBadRequest, "invalid_label", "label %q: want a key of a-z, 0-9, '.', '_', '/', '-' (at most 63) and a value of at most 256 characters", k)
		}
	}
	conv := func(field string, ws []brokerapi.Window) ([]store.Window, error) {
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
	var err error
	if s.Network, err = networkFromAPI(in.Network); err != nil {
		return s, err
	}
	if s.FreezeWindows, err = conv("freeze_windows", in.FreezeWindows); err != nil {
		return s, err
	}
	if s.MaintenanceWindows, err = conv("maintenance_windows", in.MaintenanceWindows); err != nil {
		return s, err
	}
	return s, nil
}

// settingsView is the API form of a deployment's settings.
func settingsView(s store.DeploymentSettings) brokerapi.DeploymentSettings {
	v := brokerapi.DeploymentSettings{Labels: s.Labels, ApprovalMode: s.ApprovalMode, Network: networkView(s.Network)}
	if v.ApprovalMode == "" {
		v.ApprovalMode = "customer"
	}
	for _, w := range s.FreezeWindows {
		v.FreezeWindows = append(v.FreezeWindows, brokerapi.Window{Start: w.Start, End: w.End, Reason: w.Reason})
	}
	for _, w := range s.MaintenanceWindows {
		v.MaintenanceWindows = append(v.MaintenanceWindows, brokerapi.Window{Start: w.Start, End: w.End, Reason: w.Reason})
	}
	return v
}
