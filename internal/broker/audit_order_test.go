package broker_test

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
)

// breakAudit makes every audit write of b's SQLite store fail, as a full
// disk would, until the returned func mends it. Requests and the rest of
// the store keep working.
func breakAudit(t *testing.T, b *brokertest.Broker) (mend func()) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(b.Dir, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	exec := func(q string) {
		t.Helper()
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("PRAGMA busy_timeout = 10000")
	exec("CREATE TRIGGER test_audit_fails BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END")
	return func() { exec("DROP TRIGGER test_audit_fails") }
}

var commitErrorsRE = regexp.MustCompile(`(?m)^tether_audit_commit_errors_total (\d+)`)

func commitErrors(t *testing.T, b *brokertest.Broker) int {
	t.Helper()
	res, err := http.Get(b.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	m := commitErrorsRE.FindSubmatch(raw)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestAuditBeforeAnswer: no request change is answered as done without
// its audit event. With the audit log failing, a denial, an approval that
// does not yet grant, a cancellation and an expiry are undone (the request
// is as it was) and answered 500; a revocation stands — access is never
// given back for want of an event — but is answered 500, and its event is
// written once the log takes writes again.
func TestAuditBeforeAnswer(t *testing.T) {
	var clk clock
	b := brokertest.Start(t, func(c *broker.Config) { c.Now = clk.now; c.LifecycleInterval = 20 * time.Millisecond })
	b.Pair(t, "acme", "prod")
	ctx := context.Background()
	eng, acme := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "approver@acme.test")
	ask := brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "audit order"}
	create := func() brokerapi.AccessRequest {
		t.Helper()
		ar, err := eng.CreateRequest(ctx, ask)
		if err != nil {
			t.Fatal(err)
		}
		return ar
	}
	toDeny, toCancel, toRevoke, toExpire := create(), create(), create(), create()
	for _, ar := range []brokerapi.AccessRequest{toRevoke, toExpire} {
		if _, err := acme.Approve(ctx, ar.ID, ""); err != nil {
			t.Fatal(err)
		}
	}
	state := func(id string) brokerapi.AccessRequest {
		t.Helper()
		ar, err := b.Client.GetRequest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ar
	}

	mend := breakAudit(t, b)
	_, err := acme.Deny(ctx, toDeny.ID, "not now")
	wantAPIErr(t, "deny with the audit log failing", err, 500, "audit log could not be written")
	if ar := state(toDeny.ID); ar.State != brokerapi.StatePending || len(ar.Reviews) != 0 {
		t.Errorf("after an unaudited denial the request is %s with %d reviews, want pending with none", ar.State, len(ar.Reviews))
	}
	_, err = eng.Cancel(ctx, toCancel.ID)
	wantAPIErr(t, "cancel with the audit log failing", err, 500, "audit log could not be written")
	if ar := state(toCancel.ID); ar.State != brokerapi.StatePending {
		t.Errorf("after an unaudited cancellation the request is %s, want pending", ar.State)
	}

	// A revocation stands without its event, but is not answered as done.
	_, err = acme.Revoke(ctx, toRevoke.ID, "stop")
	wantAPIErr(t, "revoke with the audit log failing", err, 500, "is revoked")
	if ar := state(toRevoke.ID); ar.State != brokerapi.StateRevoked {
		t.Errorf("after a revocation with the audit log failing the request is %s, want revoked (fail closed)", ar.State)
	}
	// Expiry: the lifecycle loop tries, fails, undoes, and tries again.
	clk.advance(31 * time.Minute)
	eng, acme = asUser(t, b, "engineer@vendor.test"), asUser(t, b, "approver@acme.test") // ID tokens last 15 minutes
	errs := commitErrors(t, b)
	deadline := time.Now().Add(20 * time.Second)
	// Each tick of the loop tries the revocation's event and the expiry.
	for commitErrors(t, b) < errs+6 {
		if time.Now().After(deadline) {
			t.Fatal("the lifecycle loop did not try to record the expiry")
		}
		time.Sleep(20 * time.Millisecond) // polling the audit metrics for the loop's attempts
	}
	// The loop may be between an attempt and its undo: look again.
	for ar := state(toExpire.ID); ar.State != brokerapi.StateActive; ar = state(toExpire.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("after an unaudited expiry the request is %s, want active until its event is written", ar.State)
		}
		time.Sleep(5 * time.Millisecond) // polling past the loop's attempt
	}

	for _, id := range []string{toDeny.ID, toCancel.ID, toRevoke.ID, toExpire.ID} {
		if evs, _ := b.Store().Records(ctx, audit.Filter{RequestID: id, FromIndex: 0}); len(evs) > 0 {
			for _, r := range evs {
				if r.Type == audit.ReviewDenied || r.Type == audit.RequestCancelled || r.Type == audit.GrantRevoked || r.Type == audit.GrantExpired {
					t.Errorf("request %s has a %s event although the audit log was failing", id, r.Type)
				}
			}
		}
	}

	// The log takes writes again: the revocation's event is written, the
	// expiry happens, and the undone actions succeed when asked again.
	mend()
	deadline = time.Now().Add(20 * time.Second)
	for {
		recs, err := b.Store().Records(ctx, audit.Filter{RequestID: toRevoke.ID, Type: audit.GrantRevoked})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 1 {
			break
		}
		if len(recs) > 1 || time.Now().After(deadline) {
			t.Fatalf("request %s has %d grant.revoked events after the log mended, want 1", toRevoke.ID, len(recs))
		}
		time.Sleep(20 * time.Millisecond) // polling for the lifecycle loop's retry
	}
	waitState(t, eng, state(toExpire.ID), brokerapi.StateExpired)
	if ar, err := acme.Deny(ctx, toDeny.ID, "not now"); err != nil || ar.State != brokerapi.StateDenied {
		t.Errorf("deny after the log mended = %s, %v", ar.State, err)
	}
	if ar, err := eng.Cancel(ctx, toCancel.ID); err != nil || ar.State != brokerapi.StateCancelled {
		t.Errorf("cancel after the log mended = %s, %v", ar.State, err)
	}
}
