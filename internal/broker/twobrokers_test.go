package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/pgtest"
)

// TestTwoBrokersOnePostgreSQL: two brokers on one PostgreSQL database,
// with one shared key, both take audited actions concurrently. Before the
// store sequenced the audit log, each broker kept the log's size in
// memory, so once one wrote, the other refused every audited action
// ("the first index does not continue the log") while still applying
// some of them. Now every action on either is applied, audited once,
// and the log verifies from both.
func TestTwoBrokersOnePostgreSQL(t *testing.T) {
	dsn := pgtest.Start(t)
	first := t.TempDir()
	a := brokertest.Start(t, func(c *broker.Config) {
		c.DataDir, c.StoreDriver, c.StoreDSN = first, "postgres", dsn
	})
	// The second broker shares the first's key.
	second := t.TempDir()
	key, err := os.ReadFile(filepath.Join(first, "broker.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(second, "broker.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	b := brokertest.Start(t, func(c *broker.Config) {
		c.DataDir, c.StoreDriver, c.StoreDSN = second, "postgres", dsn
	})

	ctx := context.Background()
	const each = 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for i, bk := range []*brokertest.Broker{a, b} {
		wg.Go(func() {
			for n := range each {
				if _, err := bk.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: fmt.Sprintf("b%d-d%d", i, n)}); err != nil {
					errs <- fmt.Errorf("broker %d: create deployment %d: %w", i, n, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, bk := range []*brokertest.Broker{a, b} {
		evs, err := bk.Client.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(audit.DeploymentCreated), Limit: 1000})
		if err != nil {
			t.Fatalf("broker %d: audit search: %v", i, err)
		}
		if len(evs) != 2*each {
			t.Errorf("broker %d sees %d deployment.created events, want %d", i, len(evs), 2*each)
		}
		ds, err := bk.Client.ListDeployments(ctx)
		if err != nil || len(ds) != 2*each {
			t.Errorf("broker %d lists %d deployments (%v), want %d", i, len(ds), err, 2*each)
		}
	}
	// Both export a log that verifies with the shared key.
	for i, bk := range []*brokertest.Broker{a, b} {
		var buf bytes.Buffer
		if err := bk.Client.AuditExport(ctx, &buf, time.Time{}, time.Time{}); err != nil {
			t.Fatalf("broker %d: export: %v", i, err)
		}
		pub, err := bk.Client.AuditPublicKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v, err := audit.NewVerifier(pub.VerifierKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := audit.Verify(&buf, audit.VerifyOptions{Log: v}); err != nil {
			t.Errorf("broker %d: the export does not verify: %v", i, err)
		}
	}
}
