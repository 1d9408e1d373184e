package broker_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokercli"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devbroker"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
	"github.com/tetherhq/tether/internal/testenv"
)

// TestRevocationOnFullDisk: with the broker's SQLite store on a full
// volume (a small tmpfs filled by a ballast file), revocation and expiry
// still cut access, at the agent and at the broker, and the broker says
// what it could and could not do. The first revocation is written in the
// space of the store's reserve, which the broker releases and reports
// spent; with the reserve spent and the disk full again, a revocation
// with 'broker request revoke' still reaches the agent and is refused by
// the broker, and the CLI fails saying the revocation is in force but
// not recorded, and why; once space is freed it is recorded, audited, and
// the reserve is made again. (The broker used to answer "internal error"
// and leave the grant working.)
func TestRevocationOnFullDisk(t *testing.T) {
	vol := testenv.Tmpfs(t, "48m")
	dbPath := filepath.Join(vol, "tether.db")
	ch := chtest.Start(t)
	clk := &clock{}
	b := brokertest.Start(t, func(c *broker.Config) {
		c.StoreDSN = dbPath
		c.Now = clk.now
		c.LifecycleInterval = 100 * time.Millisecond
	})
	ctx := context.Background()
	res, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.RunAgent(t, agent.Config{
		StateDir: t.TempDir(), Join: b.Join(), PairingToken: res.Pairing.Token, Hostname: "diskfull", Now: clk.now,
		Upstreams: agent.Upstreams{ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password},
	}, true)
	if fi, err := os.Stat(sqlitestore.ReservePath(dbPath)); err != nil || fi.Size() != sqlitestore.ReserveSize {
		t.Fatalf("the store's reserve = %v %v, want a file of %d bytes", fi, err, sqlitestore.ReserveSize)
	}
	wantMetric(t, b, "tether_store_reserve_bytes 8.388608e+06")

	eng, acme := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "approver@acme.test")
	type granted struct{ ID, Token, Reason string }
	grantOf := func(dur, reason string) granted {
		t.Helper()
		ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: dur, Reason: reason})
		if err != nil {
			t.Fatal(err)
		}
		if ar, err = acme.Approve(ctx, ar.ID, "ok"); err != nil || ar.Grant == nil {
			t.Fatalf("approve: %+v %v", ar, err)
		}
		stored, err := b.Store().GetRequest(ctx, ar.ID)
		if err != nil {
			t.Fatal(err)
		}
		return granted{ar.ID, stored.Grant.Token, reason}
	}
	byAPI, byCLI, expiring := grantOf("30m", "revoked by the API"), grantOf("30m", "revoked by the CLI"), grantOf("2m", "left to expire")
	for _, g := range []granted{byAPI, byCLI, expiring} {
		if status, out := viaBroker(t, eng, g.Token); status != http.StatusOK {
			t.Fatalf("query under the grant %s before the disk filled = %d %s", g.Reason, status, out)
		}
	}

	// The disk fills up: the store can take no more writes.
	fillVolume(t, dbPath, "ballast-1")
	start := time.Now()
	if _, err := acme.Revoke(ctx, byAPI.ID, "disk full, first"); err != nil {
		t.Fatalf("revoke with the reserve in place: %v", err)
	}
	t.Logf("revocation on a full disk, written in the reserve's room: %v", time.Since(start).Round(time.Millisecond))
	if _, err := os.Stat(sqlitestore.ReservePath(dbPath)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the reserve after a revocation on a full disk: %v, want it released (or the disk was not full)", err)
	}
	wantMetric(t, b, "tether_store_reserve_bytes 0", "tether_store_reserve_released_total 1")
	if ar, err := b.Store().GetRequest(ctx, byAPI.ID); err != nil || ar.State != store.StateRevoked {
		t.Errorf("stored request revoked in the reserve's room = %s %v, want revoked", ar.State, err)
	}
	wantRevokedEvent(t, b, byAPI.ID, 30*time.Second)
	wantRefused(t, b, eng, res.Deployment.ID, byAPI.Token, "revoked")

	// Full again, and the reserve spent: the revocation is in force at the
	// agent and at the broker, but the store cannot record it.
	fillVolume(t, dbPath, "ballast-2")
	cliCfg := cliConfigFor(t, b, "approver@acme.test")
	var stdout, stderr bytes.Buffer
	start = time.Now()
	err = brokercli.Run(ctx, []string{"request", "revoke", "--config", cliCfg, "--reason", "disk full, second", byCLI.ID}, &stdout, &stderr)
	if err == nil {
		t.Fatalf("'broker request revoke' on a full disk without reserve succeeded: %q", stdout.String())
	}
	msg := err.Error()
	t.Logf("'broker request revoke' on a full disk without reserve, in force in %v; the approver reads: %s", time.Since(start).Round(time.Millisecond), msg)
	for _, want := range []string{"is revoked", "its agent refuses the grant from now on", "this broker refuses its grant", "could not be recorded in the store", "disk is full", "free space"} {
		if !strings.Contains(msg, want) {
			t.Errorf("'broker request revoke' says %q, want it to say %q", msg, want)
		}
	}
	// What cannot be done says why.
	_, err = b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "other"})
	wantAPIErr(t, "create a deployment on a full disk", err, http.StatusInsufficientStorage, "the broker's disk is full, so this could not be done: free space")
	if ar, err := b.Store().GetRequest(ctx, byCLI.ID); err != nil || ar.State != store.StateActive {
		t.Fatalf("stored request = %s %v, want still active (the disk is full)", ar.State, err)
	}
	wantMetric(t, b, "tether_revocations_unrecorded 1")
	wantRefused(t, b, eng, res.Deployment.ID, byCLI.Token, "revoked")

	// Expiry needs no write: at the grant's expiry both refuse it.
	if status, out := viaBroker(t, eng, expiring.Token); status != http.StatusOK {
		t.Fatalf("the expiring grant before its expiry, on a full disk = %d %s, want 200", status, out)
	}
	clk.advance(150 * time.Second)
	wantRefused(t, b, eng, res.Deployment.ID, expiring.Token, "expired")

	// Space freed: the held revocation is recorded, its event written,
	// the reserve made again.
	for _, f := range []string{"ballast-1", "ballast-2"} {
		if err := os.Remove(filepath.Join(vol, f)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ar, err := b.Store().GetRequest(ctx, byCLI.ID)
		if err == nil && ar.State == store.StateRevoked {
			if ar.EndReason != "disk full, second" {
				t.Errorf("recorded revocation's reason = %q", ar.EndReason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the held revocation was not recorded within 30 s of space being freed: %s %v", ar.State, err)
		}
		time.Sleep(50 * time.Millisecond) // the lifecycle's next tick
	}
	wantRevokedEvent(t, b, byCLI.ID, 30*time.Second)
	for time.Now().Before(deadline) {
		if fi, err := os.Stat(sqlitestore.ReservePath(dbPath)); err == nil && fi.Size() == sqlitestore.ReserveSize {
			break
		}
		time.Sleep(50 * time.Millisecond) // the lifecycle's next tick
	}
	wantMetric(t, b, "tether_store_reserve_bytes 8.388608e+06", "tether_revocations_unrecorded 0")
	if ar, err := b.Store().GetRequest(ctx, expiring.ID); err != nil || ar.State != store.StateExpired {
		t.Errorf("the expired request after space was freed = %s %v, want expired", ar.State, err)
	}
}

// fillVolume fills the volume of the SQLite store at dbPath with a
// ballast file until no byte more fits. The store's write-ahead log is
// emptied first (a checkpoint that truncates it), so that its next write
// needs new space rather than reusing the log's old frames.
func fillVolume(t *testing.T, dbPath, name string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	var busy, logged, done int
	if err := db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logged, &done); err != nil {
		t.Fatalf("checkpoint the store: %v", err)
	}
	db.Close()
	f, err := os.Create(filepath.Join(filepath.Dir(dbPath), name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for _, n := range []int{len(buf), 4096, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill the volume: %v", err)
				}
				break
			}
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(dbPath), &st); err != nil || st.Bavail != 0 {
		t.Fatalf("volume after filling: %d blocks free, %v", st.Bavail, err)
	}
}

// viaBroker runs a query through the broker under the grant tok.
func viaBroker(t *testing.T, c *brokerapi.Client, tok string) (int, string) {
	t.Helper()
	res, err := c.DataPlane(context.Background(), http.MethodPost, "acme/prod", "clickhouse/query", strings.NewReader(`{"sql":"SELECT 1 FROM system.one"}`),
		http.Header{protocol.HeaderGrant: {tok}, "Content-Type": {"application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

// wantRefused checks that the grant tok is refused through the broker and
// by the agent itself, which names why.
func wantRefused(t *testing.T, b *brokertest.Broker, eng *brokerapi.Client, depID, tok, why string) {
	t.Helper()
	if status, out := viaBroker(t, eng, tok); status != http.StatusForbidden {
		t.Errorf("query through the broker under a grant %s on a full disk = %d %s, want 403", why, status, out)
	}
	body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: "SELECT 1 FROM system.one"})
	res, err := b.CallAgent(context.Background(), depID, http.MethodPost, protocol.PathClickHouseQuery, body, http.Header{protocol.HeaderGrant: {tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusForbidden || !strings.Contains(string(out), why) {
		t.Errorf("the agent, asked directly under a grant %s = %d %s, want 403 naming %q", why, res.StatusCode, out, why)
	}
}

// wantRevokedEvent waits for request id's grant.revoked event.
func wantRevokedEvent(t *testing.T, b *brokertest.Broker, id string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		evs, err := b.Client.AuditSearch(context.Background(), brokerapi.AuditQuery{Request: id, Type: string(audit.GrantRevoked)})
		if err == nil && len(evs) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("grant.revoked of %s: %d events, %v; want 1 within %v", id, len(evs), err, within)
			return
		}
		time.Sleep(50 * time.Millisecond) // the lifecycle's next tick writes the backlog
	}
}

// wantMetric waits until the broker's /metrics holds each line (gauges
// follow the lifecycle's tick).
func wantMetric(t *testing.T, b *brokertest.Broker, lines ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get(b.APIURL() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var missing []string
		for _, l := range lines {
			if !strings.Contains(string(body), "\n"+l+"\n") {
				missing = append(missing, l)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("/metrics lacks %q", missing)
			return
		}
		time.Sleep(50 * time.Millisecond) // the lifecycle's next tick
	}
}

// cliConfigFor writes a CLI config signed in as email.
func cliConfigFor(t *testing.T, b *brokertest.Broker, email string) string {
	t.Helper()
	tok, err := b.DevIdP().Token(brokertest.IssuerOf(email), email, devbroker.ClientID, "")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "cli.json")
	if err := config.Write(p, config.CLI{APIURL: b.APIURL(), Token: tok}, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
