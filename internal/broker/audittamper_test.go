package broker_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
)

// TestAuditSearchRefusesEditedColumns: someone with write access to the
// broker's database changes the searched columns of an event (here: makes
// a deployment.created look like a login, of someone else, on another
// deployment). Searches that would return it — and show-session, which
// is made of searches — refuse with a message naming the event instead
// of showing it under its false columns; the refusal is audited.
func TestAuditSearchRefusesEditedColumns(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	evs, err := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(audit.DeploymentCreated)})
	if err != nil || len(evs) != 1 {
		t.Fatalf("search = %v, %v; want the one deployment.created", evs, err)
	}
	idx := evs[0].Index

	db, err := sql.Open("sqlite", filepath.Join(b.Dir, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit_events SET type = 'auth.login', subject = 'nobody', deployment = 'other' WHERE idx = ?`, idx); err != nil {
		t.Fatal(err)
	}

	_, err = b.Client.AuditSearch(ctx, brokerapi.AuditQuery{})
	t.Logf("search after the edit: %v", err)
	for _, q := range []brokerapi.AuditQuery{{}, {Type: string(audit.AuthLogin)}, {Actor: "nobody"}} {
		_, err := b.Client.AuditSearch(ctx, q)
		want := "event " + strconv.FormatUint(idx, 10) + ": stored type"
		if err == nil || !strings.Contains(err.Error(), "modified outside the broker") || !strings.Contains(err.Error(), want) {
			t.Errorf("search %+v after the edit = %v, want a refusal naming the event (%q)", q, err, want)
		}
	}
	// The refusal is in the log, and searchable.
	got, err := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(audit.VerifyFailed)})
	if err != nil || len(got) != 1 || !strings.Contains(string(got[0].Event), `"found_by":"read"`) {
		t.Errorf("audit.verify_failed events = %v, %v; want one, found by a read", got, err)
	}
}
