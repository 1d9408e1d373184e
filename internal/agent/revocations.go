package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/config"
)

// The agent keeps the grants the broker revoked in its state directory, so
// that a restart does not make a revoked grant good again: the grant's
// signature, window and scope all still verify, and only this list says
// no. Each revocation is on disk (fsynced) before the broker's revoke call
// is answered; an entry is dropped once its grant has expired, since an
// expired grant fails verification by itself.

const revocationsFile = "revoked-grants.json"

// maxRevocations bounds the list (and its file, well within
// [config.MaxFileSize]). Grants last at most 12 h, so the list holds only
// what was revoked in the last 12 h or so; a broker revoking more than this
// within one grant lifetime is answered with an error it will retry.
const maxRevocations = 8000

// revocationKeep is how long a revocation without a known grant expiry is
// kept: longer than any grant may last (12 h) plus clock skew.
const revocationKeep = 13 * time.Hour

// revocationSkew is how long after its grant's expiry a revocation is
// still kept, covering the clock skew grant verification tolerates.
const revocationSkew = time.Minute

// ErrRevocationsFull reports that the revocation list holds
// [maxRevocations] unexpired grants and cannot take another.
var ErrRevocationsFull = errors.New("the agent's revocation list is full")

// revocationFile is the JSON form of the list.
type revocationFile struct {
	Version int                  `json:"version"`
	Revoked map[string]time.Time `json:"revoked"` // grant ID → until when to remember it
}

func (f revocationFile) Validate() error {
	if f.Version != 1 {
		return fmt.Errorf("version %d: want 1", f.Version)
	}
	if len(f.Revoked) > maxRevocations {
		return fmt.Errorf("%d revoked grants: at most %d", len(f.Revoked), maxRevocations)
	}
	for id, until := range f.Revoked {
		if !grantIDRE.MatchString(id) {
			return fmt.Errorf("grant ID %q is not letters, digits and '-'", id)
		}
		if until.IsZero() {
			return fmt.Errorf("grant %s has no expiry", id)
		}
	}
	return nil
}

// revocations is the agent's durable list of revoked grants. It is safe
// for concurrent use.
type revocations struct {
	path string

	mu sync.Mutex // serialises changes and file writes
	m  map[string]time.Time
}

// loadRevocations reads the list at path; a missing file is an empty
// list. A damaged file is an error: the agent then refuses to start rather
// than forget a revocation.
func loadRevocations(path string) (*revocations, error) {
	r := &revocations{path: path, m: map[string]time.Time{}}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	var f revocationFile
	if err := config.LoadWith(path, &f, (*revocationFile).Validate); err != nil {
		return nil, fmt.Errorf("revoked grants list is damaged, so the agent could serve a grant the broker revoked: %w (restore the file; or, once 13 h have passed since the last revocation, when every grant it names has expired, move it aside)", err)
	}
	for id, until := range f.Revoked {
		r.m[id] = until
	}
	return r, nil
}

// has reports whether grant id was revoked.
func (r *revocations) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.m[id]
	return ok
}

// add records that grant id is revoked until its expiry (zero: unknown)
// and returns once the list is on disk. Expired entries are dropped on the
// way. On an error the grant is still refused until the agent stops.
func (r *revocations) add(id string, until, now time.Time) error {
	if until.IsZero() || until.Before(now) {
		// The grant may be one whose expiry the broker did not say, or
		// the clocks may disagree: keep it as long as any grant lasts.
		until = now.Add(revocationKeep)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.m[id]; ok && !old.Before(until) {
		return nil // already on disk, for as long
	}
	next := make(map[string]time.Time, len(r.m)+1)
	for k, u := range r.m {
		if now.Before(u.Add(revocationSkew)) {
			next[k] = u
		}
	}
	next[id] = until
	if len(next) > maxRevocations {
		// Refuse it in memory at least, and tell the broker, which
		// retries.
		r.m[id] = until
		return fmt.Errorf("%w (%d grants revoked within their lifetime): the revocation of %s holds only until the agent restarts", ErrRevocationsFull, maxRevocations, id)
	}
	if err := config.Write(r.path, revocationFile{Version: 1, Revoked: next}, 0o600); err != nil {
		r.m[id] = until
		return fmt.Errorf("save the revocation of grant %s (it holds only until the agent restarts): %w", id, err)
	}
	r.m = next
	return nil
}

// revocationsPath is where the list of an agent with state dir dir lives.
func revocationsPath(dir string) string { return filepath.Join(dir, revocationsFile) }
