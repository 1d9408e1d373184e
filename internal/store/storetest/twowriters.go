package storetest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/store"
)

// RunTwoWriters checks that two audit logs, as two brokers run them on
// one database with one shared signing key, both append: each through its
// own store (connection pool), concurrently. Every event is stored once
// with its own index, both logs sign or adopt checkpoints that cover
// them, both prove inclusion and consistency against the latest
// checkpoint, and the export verifies. open opens another store on the
// same database each time it is called.
func RunTwoWriters(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := t.Context()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	origin := audit.OriginFor(pub)
	signer, err := audit.NewSigner(origin, priv)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := audit.VerifierKey(origin, pub)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := audit.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	var logs []*audit.Log
	for range 2 {
		l, err := audit.OpenLog(ctx, audit.LogConfig{Storage: open(t), Signer: signer, Verifier: verifier, CheckpointInterval: 20 * time.Millisecond, VerifyInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(runCtx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		logs = append(logs, l)
	}

	const perWriter, writers = 40, 3
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers*perWriter)
	for b, l := range logs {
		for w := range writers {
			wg.Go(func() {
				for i := range perWriter {
					e := audit.Event{Type: audit.DeploymentCreated, Actor: audit.Actor{Subject: fmt.Sprintf("broker%d-writer%d", b, w)},
						Deployment: fmt.Sprintf("d-%d-%d-%d", b, w, i), Outcome: audit.Success}
					if err := audit.Stamp(&e, time.Now()); err != nil {
						errs <- err
						return
					}
					if err := l.Record(ctx, e); err != nil {
						errs <- fmt.Errorf("broker %d: %w", b, err)
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Record on one of two brokers sharing a database: %v", err)
	}
	if t.Failed() {
		return
	}
	const total = 2 * writers * perWriter
	st := open(t)
	recs, err := st.Records(ctx, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != total {
		t.Fatalf("%d events stored by two brokers, want %d", len(recs), total)
	}
	for i, r := range recs {
		if r.Index != uint64(i) {
			t.Fatalf("event %d has index %d: indexes must follow each other", i, r.Index)
		}
	}
	// Each broker signs, or adopts, a checkpoint of the whole log.
	for b, l := range logs {
		cp, ok, err := l.Checkpoint(ctx)
		if err != nil || !ok || cp.Size != total {
			t.Fatalf("broker %d: Checkpoint = size %d, %v, %v; want %d", b, cp.Size, ok, err, total)
		}
	}
	cp, _, err := st.LatestCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for b, l := range logs {
		for _, i := range []uint64{0, total / 2, total - 1} {
			p, err := l.InclusionProof(ctx, i, cp.Size)
			if err != nil {
				t.Fatalf("broker %d: inclusion proof of %d: %v", b, i, err)
			}
			if err := audit.VerifyInclusion(recs[i].LeafHash, i, cp.Size, p, cp.Root); err != nil {
				t.Errorf("broker %d: inclusion proof of %d does not verify: %v", b, i, err)
			}
		}
		cps, err := st.Checkpoints(ctx, 1, cp.Size)
		if err != nil || len(cps) == 0 {
			t.Fatalf("checkpoints: %v", err)
		}
		m := cps[0]
		if m.Size < cp.Size {
			p, err := l.ConsistencyProof(ctx, m.Size, cp.Size)
			if err != nil {
				t.Fatalf("broker %d: consistency proof %d→%d: %v", b, m.Size, cp.Size, err)
			}
			if err := audit.VerifyConsistency(m.Size, cp.Size, m.Root, cp.Root, p); err != nil {
				t.Errorf("broker %d: consistency proof %d→%d does not verify: %v", b, m.Size, cp.Size, err)
			}
		}
	}
	var buf bytes.Buffer
	if _, _, err := logs[1].Export(ctx, &buf, audit.ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(&buf, audit.VerifyOptions{Log: verifier})
	if err != nil {
		t.Fatalf("the export of a log two brokers wrote does not verify: %v", err)
	}
	t.Logf("two brokers stored %d events; %d checkpoints in the store; export: %+v", total, len(mustCheckpoints(t, st, cp.Size)), rep)
}

func mustCheckpoints(t *testing.T, st store.Store, upTo uint64) []audit.StoredCheckpoint {
	t.Helper()
	cps, err := st.Checkpoints(t.Context(), 1, upTo)
	if err != nil {
		t.Fatal(err)
	}
	return cps
}
