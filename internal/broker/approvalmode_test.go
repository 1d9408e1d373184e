package broker_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
)

// TestNoVendorSetAutoApproval: the vendor-set approval mode is gone. A
// vendor admin — what a compromised vendor side holds — cannot switch a
// deployment to auto_prometheus (400 invalid_approval_mode, pointing to
// the customer's standing permits), and a row stored before the removal
// with approval_mode auto_prometheus spares a prometheus:read request no
// customer review: it waits, pending, for an approver of acme.
func TestNoVendorSetAutoApproval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := brokertest.Start(t, nil)
	b.Pair(t, "acme", "prod")
	admin, eng := asUser(t, b, "admin@vendor.test"), asUser(t, b, "engineer@vendor.test")

	_, err := admin.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{ApprovalMode: "auto_prometheus"})
	wantAPIErr(t, "admin sets approval_mode auto_prometheus", err, 400, "approval_mode auto_prometheus was removed: metrics reads without a per-request approval now need a standing permit the customer's approvers sign ('broker permit create')")
	_, err = admin.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{ApprovalMode: "anyone"})
	wantAPIErr(t, "admin sets approval_mode anyone", err, 400, "'broker permit create'")
	// An older client sending the old default changes nothing, and no
	// view shows an approval mode any more.
	d, err := admin.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{ApprovalMode: "customer", Labels: map[string]string{"env": "prod"}})
	if err != nil {
		t.Fatalf("admin sets labels with approval_mode customer: %v", err)
	}
	if d.Settings.ApprovalMode != "" || d.Settings.Labels["env"] != "prod" {
		t.Errorf("settings after the change = %+v, want env=prod and no approval mode", d.Settings)
	}

	// A row written before the removal.
	db, err := sql.Open("sqlite", filepath.Join(b.Dir, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	defer db.Close()
	if _, err := db.ExecContext(ctx, "PRAGMA busy_timeout = 10000"); err != nil {
		t.Fatal(err)
	}
	res, err := db.ExecContext(ctx, `UPDATE deployments SET settings = '{"labels":{"env":"prod"},"approval_mode":"auto_prometheus"}' WHERE tenant = 'acme' AND name = 'prod'`)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("stored the old approval mode on %d rows (%v), want 1", n, err)
	}
	if d, err := admin.GetDeployment(ctx, "acme/prod"); err != nil || d.Settings.ApprovalMode != "" || d.Settings.Labels["env"] != "prod" {
		t.Errorf("view of the old row = %+v, %v; want env=prod and no approval mode", d.Settings, err)
	}

	ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"prometheus:read"}, Duration: "30m", Reason: "old auto_prometheus row"})
	if err != nil {
		t.Fatal(err)
	}
	if ar.State != brokerapi.StatePending || ar.Grant != nil {
		t.Errorf("prometheus:read request on the old auto_prometheus row: state %s, grant %v; want pending with no grant", ar.State, ar.Grant)
	}
	var approvers int
	for _, r := range ar.Decision.RequiredReviews {
		if r.Tenant == "acme" && r.Role == "approver" {
			approvers = r.Count
		}
	}
	if approvers != 1 {
		t.Errorf("decision %+v asks %d approvers of acme, want 1", ar.Decision, approvers)
	}
}
