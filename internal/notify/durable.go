package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// Queue keeps pending deliveries where they outlive the Notifier that
// accepted them: the broker's store ([store.Store] is one). Each row
// holds the body as sent, the webhook's lane key (a digest of its
// tenant, URL and format: never its secret, which comes from the
// configuration at send time, nor its URL, whose path may carry a
// token), the attempts made and when the next is due. A Notifier claims
// a row for a lease before it attempts it and deletes it once delivered
// or given up; a broker that dies leaves its rows to be claimed by
// another once their leases pass. Delivery stays at least once: a broker
// that dies after the receiver took a message but before deleting it
// leaves it to be sent again, with the same [Message.ID].
//
// A Notifier sends only the rows of webhooks in its own configuration;
// rows of a webhook no broker has any more are deleted after a day.
type Queue = store.WebhookQueue

const (
	// storeTimeout bounds each call to the Queue, so that a hung store
	// cannot hold up Notify (which then keeps the delivery in memory) or
	// a lane's worker.
	storeTimeout = 5 * time.Second
	// maxStoredAge is how long a row may stay in the Queue, whatever its
	// lane: a webhook removed from every broker's configuration leaves
	// rows that no broker would otherwise claim.
	maxStoredAge = 24 * time.Hour
	// sweepEvery is how often a Notifier sweeps rows past maxStoredAge.
	sweepEvery = 10 * time.Minute
)

// laneKey names a webhook in the Queue, the same on every broker
// configured with it: a digest of its tenant, URL and format.
func laneKey(h Webhook) string {
	sum := sha256.Sum256([]byte("tether webhook lane v1\x00" + h.Tenant + "\x00" + h.URL + "\x00" + h.Format))
	return hex.EncodeToString(sum[:16])
}

// persist writes ds to the Queue, unclaimed and due now, and wakes their
// lanes. It reports false, after logging why, if the store failed: the
// caller then holds them in memory.
func (n *Notifier) persist(ds []*delivery) bool {
	now := n.cfg.Now()
	rows := make([]store.WebhookDelivery, len(ds))
	for i, d := range ds {
		rows[i] = store.WebhookDelivery{Lane: d.lane.key, MessageID: d.id, Type: d.typ, Body: d.body, NextAt: now, CreatedAt: now}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	dropped, err := n.queue.AddWebhookDeliveries(ctx, rows, n.cfg.QueueSize)
	if err != nil {
		n.m.fallbacks.Add(float64(len(ds)))
		n.log.Error("notify: could not store webhook deliveries; holding them in this broker's memory only, where a restart loses them",
			"tenant", ds[0].lane.hook.Tenant, "type", ds[0].typ, "id", ds[0].id, "deliveries", len(ds), "error", err)
		return false
	}
	for _, r := range dropped {
		if l := n.byKey[r.Lane]; l != nil {
			n.drop(&delivery{lane: l, id: r.MessageID, typ: r.Type}, "queue full")
		}
	}
	for _, d := range ds {
		select {
		case d.lane.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// claim takes l's oldest due delivery from the Queue, leased to this
// Notifier; nil if there is none or the store failed (logged: the poll
// wakes the lane again).
func (n *Notifier) claim(ctx context.Context, l *lane) *delivery {
	cctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	now := n.cfg.Now()
	r, ok, err := n.queue.ClaimWebhookDelivery(cctx, l.key, n.claimer, now, now.Add(n.cfg.Lease))
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("notify: could not read pending webhook deliveries from the store; trying again at the next poll", "tenant", l.hook.Tenant, "host", l.host, "error", err)
		}
		return nil
	}
	if !ok {
		return nil
	}
	n.mu.Lock()
	n.startLocked()
	n.mu.Unlock()
	return &delivery{lane: l, id: r.MessageID, typ: r.Type, body: r.Body, seq: r.Seq, attempts: r.Attempts}
}

// reschedule records in the Queue that attempt failed and the next is
// due after wait, keeping the lease through the wait. It reports false,
// after logging why, if the delivery is no longer this Notifier's: the
// bound of the queue dropped it, or another broker took it over.
func (n *Notifier) reschedule(base context.Context, d *delivery, attempt int, wait time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(base), storeTimeout)
	defer cancel()
	next := n.cfg.Now().Add(wait)
	d.next = next
	ok, err := n.queue.RescheduleWebhookDelivery(ctx, d.seq, n.claimer, attempt, next, next.Add(n.cfg.Lease))
	if err != nil {
		// The row still says the attempt before; at worst another broker
		// tries once more than MaxAttempts, once the lease passes.
		n.log.Warn("notify: could not record a failed attempt in the store; retrying anyway", "tenant", d.lane.hook.Tenant, "host", d.lane.host, "id", d.id, "error", err)
		return true
	}
	if !ok {
		n.log.Info("notify: webhook delivery no longer ours: dropped from the full queue or taken over by another broker", "tenant", d.lane.hook.Tenant, "host", d.lane.host, "id", d.id)
	}
	return ok
}

// handBack releases a delivery from the Queue at shutdown, its attempts
// recorded and its next due at next, for another broker or this one's
// next start to continue.
func (n *Notifier) handBack(base context.Context, d *delivery, attempt int, next time.Time, attrs []any) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(base), storeTimeout)
	defer cancel()
	ok, err := n.queue.RescheduleWebhookDelivery(ctx, d.seq, n.claimer, attempt, next, time.Time{})
	switch {
	case err != nil:
		n.log.Warn("notify: shutting down; could not hand a webhook delivery back to the store: another broker takes it once its lease passes", append(attrs, "store_error", err)...)
	case ok:
		n.log.Info("notify: shutting down; webhook delivery left in the store for another broker or the next start", attrs...)
	}
}

// forget deletes a delivery made or given up from the Queue.
func (n *Notifier) forget(base context.Context, d *delivery) {
	if d.seq == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(base), storeTimeout)
	defer cancel()
	if err := n.queue.DeleteWebhookDelivery(ctx, d.seq); err != nil {
		n.log.Warn("notify: could not delete a finished webhook delivery from the store; it may be sent again (receivers deduplicate on its ID)",
			"tenant", d.lane.hook.Tenant, "host", d.lane.host, "id", d.id, "error", err)
	}
}

// poll wakes the lanes whose deliveries in the Queue are due (left by a
// broker that died or stopped, or retries of another), every
// PollInterval until ctx ends, sweeps rows no broker claims, and keeps
// tether_webhook_queue_length up to date.
func (n *Notifier) poll(ctx context.Context) {
	t := time.NewTicker(n.cfg.PollInterval)
	defer t.Stop()
	var lastSweep time.Time
	failing := false
	for {
		now := n.cfg.Now()
		if lastSweep.IsZero() || now.Sub(lastSweep) >= sweepEvery {
			lastSweep = now
			sctx, cancel := context.WithTimeout(ctx, storeTimeout)
			if k, err := n.queue.SweepWebhookDeliveries(sctx, now.Add(-maxStoredAge)); err == nil && k > 0 {
				n.log.Warn("notify: webhook deliveries older than a day deleted from the store: no broker is configured with their webhook any more", "deliveries", k)
			}
			cancel()
		}
		lctx, cancel := context.WithTimeout(ctx, storeTimeout)
		lanes, err := n.queue.WebhookLanes(lctx, now)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				n.log.Error("notify: cannot read pending webhook deliveries from the store; deliveries held there wait until it answers", "error", err)
			}
			failing = true
		case err == nil:
			if failing {
				n.log.Info("notify: the store answers again; delivering what it holds")
			}
			failing = false
			stored := 0
			for _, wl := range lanes {
				l := n.byKey[wl.Lane]
				if l == nil {
					continue
				}
				stored += wl.Pending
				if wl.Due > 0 {
					select {
					case l.wake <- struct{}{}:
					default:
					}
				}
			}
			n.mu.Lock()
			n.stored = stored
			n.setQueueLocked()
			n.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// storedPending is how many deliveries to this Notifier's webhooks the
// Queue holds.
func (n *Notifier) storedPending(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	lanes, err := n.queue.WebhookLanes(ctx, n.cfg.Now())
	if err != nil {
		return 0, err
	}
	pending := 0
	for _, wl := range lanes {
		if n.byKey[wl.Lane] != nil {
			pending += wl.Pending
		}
	}
	return pending, nil
}

// setQueueLocked sets tether_webhook_queue_length: the deliveries held in
// memory and, with a Queue, those of our webhooks it held at the last
// poll. n.mu held.
func (n *Notifier) setQueueLocked() {
	n.m.queue.Set(float64(n.pending.Len() + n.stored))
}
