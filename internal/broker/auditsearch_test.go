package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
)

// TestAuditSearchByDeploymentName: the audit search takes a deployment as
// TENANT/NAME as well as by ID, and finds the same events either way;
// a deployment that does not exist is refused with a message naming it,
// never answered with an empty list (the papercut: --deployment acme/prod
// silently found nothing).
func TestAuditSearchByDeploymentName(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	ids := map[string]string{}
	for _, name := range []string{"acme/prod", "globex/prod"} {
		tenant, n, _ := strings.Cut(name, "/")
		res, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: tenant, Name: n})
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = res.Deployment.ID
	}
	reviewer := asUser(t, b, "reviewer@vendor.test")
	search := func(dep string) ([]audit.Event, error) {
		evs, err := reviewer.AuditSearch(ctx, brokerapi.AuditQuery{Deployment: dep})
		var out []audit.Event
		for _, ae := range evs {
			var e audit.Event
			if err := json.Unmarshal(ae.Event, &e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
		return out, err
	}
	for _, ref := range []string{"acme/prod", ids["acme/prod"], strings.ToUpper(ids["acme/prod"])} {
		evs, err := search(ref)
		if err != nil {
			t.Fatalf("search --deployment %s: %v", ref, err)
		}
		if len(evs) == 0 {
			t.Errorf("search --deployment %s found no events, want acme/prod's deployment.created", ref)
		}
		for _, e := range evs {
			if e.Deployment != ids["acme/prod"] {
				t.Errorf("search --deployment %s found %s of deployment %s", ref, e.Type, e.Deployment)
			}
		}
	}
	for _, tc := range []struct {
		ref, code, msg string
		status         int
	}{
		{"acme/nope", "deployment_not_found", "no deployment acme/nope: 'broker deployment list' shows them", 404},
		{"0190aaaa-0000-7000-8000-00000000000d", "deployment_not_found", "no deployment 0190aaaa-0000-7000-8000-00000000000d", 404},
		{"prod", "invalid_deployment", "want TENANT/NAME", 400},
		{"acme/Prod!", "invalid_deployment", "want TENANT/NAME", 400},
		{"acme/prod/x", "invalid_deployment", "want TENANT/NAME", 400},
	} {
		evs, err := search(tc.ref)
		var ae *brokerapi.Error
		if !errors.As(err, &ae) || ae.Status != tc.status || ae.Code != tc.code || !strings.Contains(ae.Message, tc.msg) {
			t.Errorf("search --deployment %s = %d events, %v; want %d %s %q", tc.ref, len(evs), err, tc.status, tc.code, tc.msg)
		}
	}
}
