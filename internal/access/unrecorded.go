package access

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// Revocations the store could not take (a full disk, a store that is
// down) are in force before they are durable: a revocation only takes
// access away, so acting on it early is safe, while waiting for the store
// would leave the grant working. The service holds them in memory, refuses
// their grants ([Service.Unrecorded]) and stores them as soon as it can
// ([Service.RetryUnrecorded]); the agent was told directly and keeps its
// own durable list. What a restart of this broker before then loses is
// the broker's own refusal: the agent still refuses the grant, and the
// revocation's audit event is in the broker's backlog, written once the
// log takes writes.

// CodeRevocationUnrecorded is a revocation in force (at this broker, and
// at the agent when it could be told) that the store could not record.
const CodeRevocationUnrecorded = "revocation_unrecorded"

// maxUnrecorded bounds the revocations held in memory.
const maxUnrecorded = 10000

// unrecorded is a revocation decided and in force, not yet stored.
type unrecorded struct {
	grantID string
	expiry  time.Time
	by      Caller
	reason  string
	at      time.Time
}

// isRefusal reports whether err is one of the lifecycle's refusals rather
// than a failure of the store.
func isRefusal(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// hold keeps ar's revocation in force until it is stored; it reports false
// when too many wait already.
func (s *Service) hold(ar store.AccessRequest, by Caller, reason string, at time.Time) bool {
	u := unrecorded{grantID: grantID(ar), by: by, reason: reason, at: at}
	if ar.Grant != nil {
		u.expiry = ar.Grant.Expiry
	}
	s.mu.Lock()
	_, had := s.unrecorded[ar.ID]
	ok := had || len(s.unrecorded) < maxUnrecorded
	if ok {
		s.unrecorded[ar.ID] = u
	}
	s.mu.Unlock()
	if s.cfg.Hooks.Stored != nil {
		s.cfg.Hooks.Stored() // cached data-plane lookups of the grant go at once
	}
	return ok
}

// Unrecorded reports whether grant id is revoked by a revocation the store
// has not recorded yet: the data plane refuses it as if it were stored.
func (s *Service) Unrecorded(grantID string) bool {
	if grantID == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.unrecorded {
		if u.grantID == grantID {
			return true
		}
	}
	return false
}

// UnrecordedCount is how many revocations are in force but not stored.
func (s *Service) UnrecordedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.unrecorded)
}

// RetryUnrecorded stores the revocations held in memory, as decided at
// their time, and returns how many are still waiting. One whose request
// ended meanwhile (another broker revoked it, or it expired) is dropped.
func (s *Service) RetryUnrecorded(ctx context.Context) int {
	s.mu.Lock()
	ids := make(map[string]unrecorded, len(s.unrecorded))
	for id, u := range s.unrecorded {
		ids[id] = u
	}
	s.mu.Unlock()
	for id, u := range ids {
		_, err := s.Update(ctx, id, func(ar *store.AccessRequest) error {
			next, err := Revoke(*ar, u.by.Person, u.reason, u.at)
			if err != nil {
				return err
			}
			if s.cfg.Hooks.Revoking != nil {
				s.cfg.Hooks.Revoking(&next)
			}
			*ar = next
			return nil
		})
		if err != nil && !isRefusal(err) {
			continue // the store still cannot take it
		}
		if err != nil {
			s.log.Warn("a revocation held in memory is not stored: its request changed meanwhile", "request", id, "err", err)
		} else {
			s.log.Info("a revocation held in memory is stored now", "request", id, "revoked_at", u.at)
		}
		s.mu.Lock()
		delete(s.unrecorded, id)
		s.mu.Unlock()
		s.changed()
	}
	return s.UnrecordedCount()
}

// unrecordedMessage tells the caller of a revocation the store could not
// record what took effect, what did not, and what to do.
func unrecordedMessage(ar store.AccessRequest, details map[string]any, why string, audited bool) string {
	agent := "its agent could not be told yet: this broker keeps telling it"
	if ar.Grant != nil {
		agent += " until the grant expires at " + ar.Grant.Expiry.UTC().Format(time.RFC3339)
	}
	if pushed, _ := details["pushed"].(bool); pushed {
		agent = fmt.Sprintf("its agent refuses the grant from now on (%v calls cut off, %v queries killed)", details["cut_off"], details["killed"])
	} else if ar.Grant == nil {
		agent = "it had no grant yet"
	}
	later := "records the revocation as soon as the store takes writes (its audit event is recorded)"
	if !audited {
		later = "records the revocation as soon as the store takes writes, and its audit event, kept in the broker's memory meanwhile, as soon as the audit log does"
	}
	return fmt.Sprintf("request %s is revoked: %s, and this broker refuses its grant. "+
		"But the revocation could not be recorded in the store: %s. "+
		"The broker %s; until then a restart of this broker would leave only the agent refusing the grant", ar.ID, agent, why, later)
}
