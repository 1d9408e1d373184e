package brokerapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// CustomerSettings are the settings of a deployment that its customer
// owns: only approvers of the deployment's tenant set them (GET and PUT
// /api/v1/deployments/{tenant}/{name}/customer-settings); the vendor's
// staff read them in the deployment's view. The whole value is replaced on
// PUT, so a caller reads it, changes it and writes it back with the
// Version it read.
type CustomerSettings struct {
	// FreezeWindows are the customer's change freezes: the policy asks
	// for more approvals inside one.
	FreezeWindows []Window `json:"freeze_windows"`
	// MaintenanceWindows are when the customer accepts changes such as
	// private ingress.
	MaintenanceWindows []Window `json:"maintenance_windows"`

	// Customer-signed standing permits join the customer's settings here.

	// Version names the settings as stored (a digest of them). A PUT must
	// carry the Version its caller read; if the settings changed since,
	// the broker refuses it (409 settings_changed) and changes nothing.
	Version string `json:"version"`
}

// ErrCustomerSettingsChanged is what [Client.UpdateCustomerSettings]
// returns, wrapped, when the settings kept changing under it.
var ErrCustomerSettingsChanged = errors.New("the customer settings kept changing while being updated")

func customerSettingsPath(ref string) string { return refPath(ref) + "/customer-settings" }

// CustomerSettings returns a deployment's customer settings and their
// version.
func (c *Client) CustomerSettings(ctx context.Context, ref string) (CustomerSettings, error) {
	var out CustomerSettings
	err := c.do(ctx, http.MethodGet, customerSettingsPath(ref), nil, &out)
	return out, err
}

// SetCustomerSettings replaces a deployment's customer settings, if they
// are still at s.Version, and returns them as stored with their new
// version.
func (c *Client) SetCustomerSettings(ctx context.Context, ref string, s CustomerSettings) (CustomerSettings, error) {
	var out CustomerSettings
	err := c.do(ctx, http.MethodPut, customerSettingsPath(ref), s, &out)
	return out, err
}

// UpdateCustomerSettings reads a deployment's customer settings, lets edit
// change them and writes them back. If another change came in between, it
// reads again and edits the new settings, up to five times, so no
// concurrent change is lost. An error from edit ends it unchanged.
func (c *Client) UpdateCustomerSettings(ctx context.Context, ref string, edit func(*CustomerSettings) error) (CustomerSettings, error) {
	const attempts = 5
	for range attempts {
		s, err := c.CustomerSettings(ctx, ref)
		if err != nil {
			return s, err
		}
		if err := edit(&s); err != nil {
			return s, err
		}
		out, err := c.SetCustomerSettings(ctx, ref, s)
		var ae *Error
		if errors.As(err, &ae) && ae.Code == "settings_changed" {
			continue
		}
		return out, err
	}
	return CustomerSettings{}, fmt.Errorf("update the customer settings of %s: %w (%d attempts); try again", ref, ErrCustomerSettingsChanged, attempts)
}
