package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// webhookTests check [store.WebhookQueue].
var webhookTests = []struct {
	name string
	test func(t *testing.T, s store.Store)
}{
	{"WebhookQueue", testWebhookQueue},
	{"WebhookQueueBounded", testWebhookQueueBounded},
	{"WebhookLeaseExpires", testWebhookLeaseExpires},
	{"WebhookConcurrentClaims", func(t *testing.T, s store.Store) { testWebhookRacingClaimers(t, s, s) }},
}

var hookT0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func delivery(lane, id string, at time.Time) store.WebhookDelivery {
	return store.WebhookDelivery{Lane: lane, MessageID: id, Type: "request.created", Body: []byte(`{"id":"` + id + `"}`), NextAt: at, CreatedAt: at}
}

func addDeliveries(t *testing.T, s store.WebhookQueue, max int, ds ...store.WebhookDelivery) []string {
	t.Helper()
	dropped, err := s.AddWebhookDeliveries(t.Context(), ds, max)
	if err != nil {
		t.Fatalf("AddWebhookDeliveries(%d) error = %v", len(ds), err)
	}
	var ids []string
	for _, d := range dropped {
		ids = append(ids, d.MessageID)
	}
	return ids
}

// claim claims the next due delivery of lane, or returns "" for none.
func claim(t *testing.T, s store.WebhookQueue, lane, claimer string, now time.Time, lease time.Duration) (store.WebhookDelivery, string) {
	t.Helper()
	d, ok, err := s.ClaimWebhookDelivery(t.Context(), lane, claimer, now, now.Add(lease))
	if err != nil {
		t.Fatalf("ClaimWebhookDelivery(%s, %s) error = %v", lane, claimer, err)
	}
	if !ok {
		return d, ""
	}
	return d, d.MessageID
}

func testWebhookQueue(t *testing.T, s store.Store) {
	ctx := t.Context()
	if got := addDeliveries(t, s, 10, delivery("a", "a1", hookT0), delivery("b", "b1", hookT0), delivery("a", "a2", hookT0)); got != nil {
		t.Fatalf("AddWebhookDeliveries() dropped %q, want none", got)
	}
	lanes, err := s.WebhookLanes(ctx, hookT0)
	if err != nil || !slices.Equal(lanes, []store.WebhookLane{{Lane: "a", Pending: 2, Due: 2}, {Lane: "b", Pending: 1, Due: 1}}) {
		t.Fatalf("WebhookLanes() = %+v, %v, want a 2/2 and b 1/1", lanes, err)
	}

	// Oldest first, each whole; a claimed one is no longer due.
	d, id := claim(t, s, "a", "broker1", hookT0, time.Minute)
	want := delivery("a", "a1", hookT0)
	want.Seq = d.Seq
	if id != "a1" || !slices.Equal(d.Body, want.Body) || d.Type != want.Type || !d.NextAt.Equal(hookT0) || !d.CreatedAt.Equal(hookT0) || d.Attempts != 0 {
		t.Fatalf("first claim of lane a = %+v, want %+v", d, want)
	}
	d2, id := claim(t, s, "a", "broker2", hookT0, time.Minute)
	if id != "a2" {
		t.Fatalf("second claim of lane a = %q, want a2", id)
	}
	if _, id := claim(t, s, "a", "broker2", hookT0, time.Minute); id != "" {
		t.Fatalf("third claim of lane a = %q, want none (both leased)", id)
	}
	lanes, _ = s.WebhookLanes(ctx, hookT0)
	if !slices.Equal(lanes, []store.WebhookLane{{Lane: "a", Pending: 2, Due: 0}, {Lane: "b", Pending: 1, Due: 1}}) {
		t.Errorf("WebhookLanes() with a's leased = %+v, want a 2/0, b 1/1", lanes)
	}

	// Only the holder of the lease reschedules; a release makes it due
	// again at its next time, with its attempts kept.
	if ok, err := s.RescheduleWebhookDelivery(ctx, d.Seq, "broker2", 1, hookT0, time.Time{}); err != nil || ok {
		t.Errorf("RescheduleWebhookDelivery(a1) by broker2, not its claimer = %v, %v, want false", ok, err)
	}
	next := hookT0.Add(10 * time.Second)
	if ok, err := s.RescheduleWebhookDelivery(ctx, d.Seq, "broker1", 3, next, time.Time{}); err != nil || !ok {
		t.Fatalf("RescheduleWebhookDelivery(a1) by broker1 = %v, %v, want true", ok, err)
	}
	if _, id := claim(t, s, "a", "broker2", hookT0.Add(9*time.Second), time.Minute); id != "" {
		t.Errorf("claim before a1's next attempt = %q, want none", id)
	}
	d, id = claim(t, s, "a", "broker2", next, time.Minute)
	if id != "a1" || d.Attempts != 3 || !d.NextAt.Equal(next) {
		t.Errorf("claim at a1's next attempt = %q with %d attempts, next %v; want a1, 3, %v", id, d.Attempts, d.NextAt, next)
	}

	// Delivered: deleted, twice without error.
	for range 2 {
		if err := s.DeleteWebhookDelivery(ctx, d.Seq); err != nil {
			t.Fatalf("DeleteWebhookDelivery(a1) error = %v", err)
		}
	}
	if ok, err := s.RescheduleWebhookDelivery(ctx, d.Seq, "broker2", 4, next, next.Add(time.Minute)); err != nil || ok {
		t.Errorf("RescheduleWebhookDelivery(a1 deleted) = %v, %v, want false", ok, err)
	}
	if err := s.DeleteWebhookDelivery(ctx, d2.Seq); err != nil {
		t.Fatal(err)
	}

	// Sweep forgets what was stored before a time, whatever the lane.
	addDeliveries(t, s, 10, delivery("c", "c1", hookT0.Add(time.Hour)))
	n, err := s.SweepWebhookDeliveries(ctx, hookT0.Add(time.Minute))
	if err != nil || n != 1 {
		t.Errorf("SweepWebhookDeliveries() = %d, %v, want 1 (b1)", n, err)
	}
	lanes, _ = s.WebhookLanes(ctx, hookT0.Add(time.Hour))
	if !slices.Equal(lanes, []store.WebhookLane{{Lane: "c", Pending: 1, Due: 1}}) {
		t.Errorf("WebhookLanes() after the sweep = %+v, want c 1/1 only", lanes)
	}

	// Refused: a body past the bound, no lane, max below 1.
	big := delivery("a", "big", hookT0)
	big.Body = make([]byte, store.MaxWebhookBody+1)
	for _, c := range []struct {
		name string
		ds   []store.WebhookDelivery
		max  int
	}{
		{"body too big", []store.WebhookDelivery{big}, 10},
		{"no lane", []store.WebhookDelivery{delivery("", "x", hookT0)}, 10},
		{"max 0", []store.WebhookDelivery{delivery("a", "x", hookT0)}, 0},
	} {
		if _, err := s.AddWebhookDeliveries(ctx, c.ds, c.max); err == nil {
			t.Errorf("AddWebhookDeliveries(%s) error = nil, want refused", c.name)
		}
	}
}

// testWebhookQueueBounded: past max, a lane's oldest deliveries are
// dropped and returned; other lanes keep theirs.
func testWebhookQueueBounded(t *testing.T, s store.Store) {
	addDeliveries(t, s, 3, delivery("other", "o1", hookT0))
	for i := range 3 {
		if got := addDeliveries(t, s, 3, delivery("a", fmt.Sprint("a", i), hookT0)); got != nil {
			t.Fatalf("add a%d dropped %q, want none", i, got)
		}
	}
	if got := addDeliveries(t, s, 3, delivery("a", "a3", hookT0), delivery("a", "a4", hookT0)); !slices.Equal(got, []string{"a0", "a1"}) {
		t.Errorf("adding 2 to a full lane of 3 dropped %q, want the oldest two [a0 a1]", got)
	}
	var ids []string
	for {
		d, id := claim(t, s, "a", "b", hookT0, time.Minute)
		if id == "" {
			break
		}
		ids = append(ids, id)
		if d.Lane != "a" {
			t.Errorf("claim of lane a returned lane %q", d.Lane)
		}
	}
	if !slices.Equal(ids, []string{"a2", "a3", "a4"}) {
		t.Errorf("lane a holds %q, want [a2 a3 a4]", ids)
	}
	if _, id := claim(t, s, "other", "b", hookT0, time.Minute); id != "o1" {
		t.Errorf("lane other holds %q, want o1 (untouched by a's bound)", id)
	}
}

// testWebhookLeaseExpires: a delivery claimed by a broker that then dies
// is taken by another once the lease has passed, and the dead one's late
// reschedule changes nothing.
func testWebhookLeaseExpires(t *testing.T, s store.Store) {
	ctx := t.Context()
	addDeliveries(t, s, 10, delivery("a", "a1", hookT0))
	d, _ := claim(t, s, "a", "dead", hookT0, 30*time.Second)
	if _, id := claim(t, s, "a", "alive", hookT0.Add(29*time.Second), 30*time.Second); id != "" {
		t.Fatalf("claim within the lease = %q, want none", id)
	}
	d2, id := claim(t, s, "a", "alive", hookT0.Add(30*time.Second), 30*time.Second)
	if id != "a1" || d2.Seq != d.Seq {
		t.Fatalf("claim once the lease passed = %q, want a1", id)
	}
	if ok, err := s.RescheduleWebhookDelivery(ctx, d.Seq, "dead", 1, hookT0, hookT0.Add(time.Hour)); err != nil || ok {
		t.Errorf("RescheduleWebhookDelivery by the claimer whose lease passed = %v, %v, want false", ok, err)
	}
	if ok, err := s.RescheduleWebhookDelivery(ctx, d.Seq, "alive", 1, hookT0.Add(time.Minute), hookT0.Add(2*time.Minute)); err != nil || !ok {
		t.Errorf("RescheduleWebhookDelivery by the new claimer = %v, %v, want true", ok, err)
	}
}

// testWebhookRacingClaimers: claimers on two store handles (two brokers
// sharing one database, or one handle's connection pool) race for 40
// deliveries; each is claimed exactly once.
func testWebhookRacingClaimers(t *testing.T, s1, s2 store.WebhookQueue) {
	const n = 40
	var ds []store.WebhookDelivery
	for i := range n {
		ds = append(ds, delivery("race", fmt.Sprint("m", i), hookT0))
	}
	addDeliveries(t, s1, n, ds...)
	var mu sync.Mutex
	claimed := map[string]string{}
	var wg sync.WaitGroup
	for i, s := range []store.WebhookQueue{s1, s2, s1, s2} {
		claimer := fmt.Sprint("claimer", i)
		wg.Go(func() {
			for {
				d, ok, err := s.ClaimWebhookDelivery(t.Context(), "race", claimer, hookT0, hookT0.Add(time.Minute))
				if err != nil {
					t.Errorf("%s: ClaimWebhookDelivery() error = %v", claimer, err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				if other, dup := claimed[d.MessageID]; dup {
					t.Errorf("%s claimed %s, which %s holds", claimer, d.MessageID, other)
				}
				claimed[d.MessageID] = claimer
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claimed) != n {
		t.Errorf("%d deliveries claimed, want all %d", len(claimed), n)
	}
}

// RunSharedQueues checks the webhook queue and the agent challenges on
// two store handles opened on one database, as two brokers sharing it
// hold them: racing claimers take each delivery once, and of racing
// takes of one challenge exactly one succeeds. open opens another store
// on the same, otherwise unused, database each time it is called.
func RunSharedQueues(t *testing.T, open func(t *testing.T) store.Store) {
	s1, s2 := open(t), open(t)
	t.Cleanup(func() { s1.Close(); s2.Close() })
	t.Run("WebhookClaimers", func(t *testing.T) { testWebhookRacingClaimers(t, s1, s2) })
	t.Run("ChallengeTakers", func(t *testing.T) { testChallengeRacingTakes(t, s1, s2) })
}

// BenchAddWebhookDeliveries measures a durable enqueue: storing one
// delivery of a notification (a body of about 500 bytes, as the broker
// sends) as Notify does. With full, the webhook's lane already holds max
// deliveries (a receiver that is down), so every add also drops the
// oldest; otherwise each delivery is deleted (untimed) after its add, as
// when the receiver keeps up.
func BenchAddWebhookDeliveries(b *testing.B, s store.Store, full bool) {
	ctx := b.Context()
	const max = 1000
	body := []byte(`{"id":"0190a1b2-c3d4-7e5f-8a9b-000000000000","type":"request.approved","time":"2030-03-04T05:06:07.123Z",` +
		`"tenant":"acme","deployment":"acme/prod-db","request_id":"0190a1b2-c3d4-7e5f-8a9b-000000000001","actor":"carol@acme.example",` +
		`"summary":"carol@acme.example approved alice@vendor.example's access to acme/prod-db for 1h.",` +
		`"url":"https://tether.vendor.example/ui/requests/0190a1b2-c3d4-7e5f-8a9b-000000000001",` +
		`"details":{"scopes":["clickhouse:system","prometheus:read"],"duration":"1h0m0s","ticket":"acme/infra#42","break_glass":false,"state":"approved"}}`)
	now := time.Now()
	if full {
		var ds []store.WebhookDelivery
		for i := range max {
			ds = append(ds, store.WebhookDelivery{Lane: "bench", MessageID: fmt.Sprint("fill", i), Type: "request.approved", Body: body, NextAt: now, CreatedAt: now})
		}
		if _, err := s.AddWebhookDeliveries(ctx, ds, max); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		i++
		d := store.WebhookDelivery{Lane: "bench", MessageID: fmt.Sprint("m", i), Type: "request.approved", Body: body, NextAt: now, CreatedAt: now}
		dropped, err := s.AddWebhookDeliveries(ctx, []store.WebhookDelivery{d}, max)
		if err != nil {
			b.Fatal(err)
		}
		if full != (len(dropped) == 1) {
			b.Fatalf("add #%d dropped %d, want %v", i, len(dropped), full)
		}
		if !full {
			b.StopTimer()
			d, ok, err := s.ClaimWebhookDelivery(ctx, "bench", "bench", now, now.Add(time.Minute))
			if err != nil || !ok {
				b.Fatalf("claim: %v, %v", ok, err)
			}
			if err := s.DeleteWebhookDelivery(ctx, d.Seq); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(i), "µs/enqueue")
}
