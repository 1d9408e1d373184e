package access

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// fullStore is a memStore whose writes fail, while full is set, as a
// store on a full disk does.
type fullStore struct {
	*memStore
	full atomic.Bool
}

var errDiskFull = errors.New("database or disk is full (13)")

func (s *fullStore) UpdateRequest(ctx context.Context, ar store.AccessRequest) error {
	if s.full.Load() {
		return errDiskFull
	}
	return s.memStore.UpdateRequest(ctx, ar)
}

// TestRevokeOnFullDisk: a revocation the store cannot take is in force
// anyway — pushed to the agent, its grant refused by Unrecorded, its event
// written or deferred — and the caller is told what took effect and what
// did not; it is stored, as decided at its time, once the store takes
// writes. When the hook frees space (the store's reserve), it is stored at
// once. A refused revocation holds nothing.
func TestRevokeOnFullDisk(t *testing.T) {
	tests := []struct {
		name        string
		frees       bool // StoreFailed frees space
		by          store.Person
		auditFails  bool
		wantCode    string
		wantState   string // stored at once
		wantHeld    bool
		wantMessage []string
	}{
		{name: "reserve frees space", frees: true, by: acme1, wantState: store.StateRevoked},
		{
			name: "no reserve left", by: acme1, wantCode: CodeRevocationUnrecorded, wantState: store.StateActive, wantHeld: true,
			wantMessage: []string{"is revoked", "its agent refuses the grant from now on (2 calls cut off, 1 queries killed)", "this broker refuses its grant", "could not be recorded in the store: out of space: free it", "(its audit event is recorded)"},
		},
		{
			name: "no reserve and no audit", by: acme1, auditFails: true, wantCode: CodeRevocationUnrecorded, wantState: store.StateActive, wantHeld: true,
			wantMessage: []string{"is revoked", "could not be recorded in the store", "its audit event, kept in the broker's memory meanwhile"},
		},
		{name: "refused", by: globex, wantCode: CodeNotAllowedToRevoke, wantState: store.StateActive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, allowing(), nil)
			ctx := context.Background()
			ar, err := f.create(t, false)
			if err != nil || ar.State != store.StateActive {
				t.Fatalf("Create = %s, %v; want active", ar.State, err)
			}
			fs := &fullStore{memStore: f.store}
			f.svc.cfg.Store = fs
			var pushed []string
			f.svc.cfg.Hooks.Revoked = func(_ context.Context, ar store.AccessRequest) map[string]any {
				pushed = append(pushed, ar.Grant.ID)
				return map[string]any{"pushed": true, "cut_off": 2, "killed": 1}
			}
			f.svc.cfg.Hooks.StoreFailed = func(err error) (bool, string) {
				if !errors.Is(err, errDiskFull) {
					t.Errorf("StoreFailed(%v), want the store's error", err)
				}
				if tt.frees {
					fs.full.Store(false)
					return true, ""
				}
				return false, "out of space: free it"
			}
			fs.full.Store(true)
			f.rec.failing = tt.auditFails
			at := f.clk.now()

			_, err = f.svc.Revoke(ctx, ar.ID, Caller{Person: tt.by}, "stop now")
			if got := code(err); got != tt.wantCode {
				t.Fatalf("Revoke = %v, want code %q", err, tt.wantCode)
			}
			for _, m := range tt.wantMessage {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Revoke says %q, want %q in it", err, m)
				}
			}
			if cur, _ := f.store.GetRequest(ctx, ar.ID); cur.State != tt.wantState {
				t.Errorf("stored state = %s, want %s", cur.State, tt.wantState)
			}
			if got := f.svc.Unrecorded(ar.Grant.ID); got != tt.wantHeld {
				t.Errorf("Unrecorded = %v, want %v", got, tt.wantHeld)
			}
			if tt.wantCode == CodeNotAllowedToRevoke {
				if len(pushed) != 0 {
					t.Errorf("a refused revocation was pushed to the agent: %v", pushed)
				}
				return
			}
			if len(pushed) != 1 || pushed[0] != ar.Grant.ID {
				t.Errorf("pushed to the agent = %v, want the grant once", pushed)
			}
			if tt.auditFails != (len(f.rec.deferred) == 1) {
				t.Errorf("deferred events = %d, want the grant.revoked deferred only when the audit log fails", len(f.rec.deferred))
			}
			if !tt.wantHeld {
				return
			}
			// Still full: held, tried at every lifecycle tick.
			f.clk.advance(time.Minute)
			if n := f.svc.RetryUnrecorded(ctx); n != 1 {
				t.Errorf("RetryUnrecorded on a full store = %d waiting, want 1", n)
			}
			fs.full.Store(false)
			if n := f.svc.RetryUnrecorded(ctx); n != 0 {
				t.Errorf("RetryUnrecorded with room = %d waiting, want 0", n)
			}
			cur, _ := f.store.GetRequest(ctx, ar.ID)
			if cur.State != store.StateRevoked || cur.EndReason != "stop now" || !cur.EndedAt.Equal(at) || cur.EndedBy != DisplayName(acme1) {
				t.Errorf("stored after the retry = %s %q at %v by %q, want revoked as decided at %v", cur.State, cur.EndReason, cur.EndedAt, cur.EndedBy, at)
			}
			if f.svc.Unrecorded(ar.Grant.ID) {
				t.Error("Unrecorded after the revocation was stored")
			}
		})
	}
}

// TestRetryUnrecordedDropsEnded: a held revocation of a request that ended
// meanwhile (revoked by another broker) is dropped, not stored over it.
func TestRetryUnrecordedDropsEnded(t *testing.T) {
	f := newFixture(t, allowing(), nil)
	ctx := context.Background()
	ar, err := f.create(t, false)
	if err != nil {
		t.Fatal(err)
	}
	fs := &fullStore{memStore: f.store}
	f.svc.cfg.Store = fs
	fs.full.Store(true)
	if _, err := f.svc.Revoke(ctx, ar.ID, Caller{Person: acme1}, "mine"); code(err) != CodeRevocationUnrecorded {
		t.Fatalf("Revoke = %v, want revocation_unrecorded", err)
	}
	fs.full.Store(false)
	if _, err := f.svc.Revoke(ctx, ar.ID, Caller{Person: admin}, "another broker's"); err != nil {
		t.Fatal(err)
	}
	if n := f.svc.RetryUnrecorded(ctx); n != 0 {
		t.Errorf("RetryUnrecorded = %d waiting, want the ended request dropped", n)
	}
	if cur, _ := f.store.GetRequest(ctx, ar.ID); cur.EndReason != "another broker's" {
		t.Errorf("end reason = %q, want the stored revocation's", cur.EndReason)
	}
}
