package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/notify"
	"github.com/tetherhq/tether/policy"
)

// startPolicy loads the access policy: the embedded default, or the
// configured directory, watched for changes.
func (b *Broker) startPolicy(ctx context.Context) error {
	e, err := policy.New(ctx, policy.Options{
		Dir:        b.cfg.PolicyDir,
		Logger:     b.cfg.Logger,
		Registerer: b.reg,
		Now:        b.now,
		OnReload:   b.policyReloaded,
	})
	if err != nil {
		return fmt.Errorf("access policy: %w", err)
	}
	b.policy = e
	return nil
}

// policyReloaded audits every reload of the policy directory.
func (b *Broker) policyReloaded(hash string, err error) {
	ev := audit.Event{Type: audit.PolicyReloaded, Actor: audit.Actor{Subject: "broker", Role: "broker"}, Outcome: audit.Success,
		Details: map[string]any{"policy_hash": hash, "dir": b.cfg.PolicyDir}}
	if err != nil {
		ev.Outcome, ev.Reason = audit.Failure, "broken policy kept out, the last good one still decides: "+err.Error()
		b.log.Error("policy reload failed; the last good policy still decides", "dir", b.cfg.PolicyDir, "err", err)
	} else {
		b.log.Info("policy reloaded", "dir", b.cfg.PolicyDir, "hash", hash)
	}
	if rerr := b.auditLog.Record(context.Background(), ev); rerr != nil {
		b.log.Error("audit a policy reload", "err", rerr)
	}
}

// startNotifier sets up the customers' webhooks, resolving their secrets.
func (b *Broker) startNotifier() error {
	if len(b.cfg.Webhooks) == 0 && b.cfg.Email == nil {
		return nil
	}
	hooks := make([]notify.Webhook, 0, len(b.cfg.Webhooks))
	for i, h := range b.cfg.Webhooks {
		secret, err := config.Secret(h.Secret)
		if err != nil {
			return fmt.Errorf("webhooks[%d] (tenant %s): secret: %w", i, h.Tenant, err)
		}
		h.Secret = secret
		hooks = append(hooks, h)
	}
	var email *notify.Email
	if b.cfg.Email != nil {
		e := *b.cfg.Email
		if e.Password != "" {
			pw, err := config.Secret(e.Password)
			if err != nil {
				return fmt.Errorf("email: password: %w", err)
			}
			e.Password = pw
		}
		email = &e
	}
	// Pending deliveries live in the store, so that one this broker
	// accepted is made even if it dies: by it after a restart, or by any
	// broker sharing the store.
	n, err := notify.New(notify.Config{Webhooks: hooks, Email: email, Now: b.now, Logger: b.cfg.Logger, Registerer: b.reg, ShutdownTimeout: 3 * time.Second, Queue: b.store})
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	b.notifier = n
	return nil
}

// PolicyHash is the hash of the policy deciding now.
func (b *Broker) PolicyHash() string { return b.policy.Hash() }
