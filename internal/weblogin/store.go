package weblogin

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Kinds of stored entries, as [Store] names them (the same strings as
// the broker's store.WebSession and store.WebPending).
const (
	kindSession = "session"
	kindPending = "pending"
)

// maxStoredValue bounds an encoded session or pending login, as the
// broker's store does (store.MaxWebValue).
const maxStoredValue = 64 << 10

// storeTimeout bounds each call of the [Store].
const storeTimeout = 5 * time.Second

// touchEvery is how often a session in use has its last use written
// back: at most once a minute, not on every request, so a busy console
// does not write to the database on every page. The idle timeout is
// thereby measured to within a minute.
const touchEvery = time.Minute

// Store keeps a [Manager]'s sessions and pending logins: where it is
// shared (the broker's database), every Manager on it honours a session
// another made, completes a login another began, and a sign-out or expiry
// on one ends the session on all; a restart signs nobody out. The
// broker's store (store.WebStore) is one; without one ([Config.Store]
// nil) a Manager keeps them in memory.
//
// Entries are of two kinds, "session" and "pending", keyed by the
// SHA-256 of the cookie naming them (never the cookie), with a value the
// Manager encodes (JSON, at most 64 KiB) and an expiry. An entry is live
// while now is before its expiry; methods given now ignore the others.
type Store interface {
	// PutWeb stores value under key until expires, replacing any entry
	// of that kind and key. It removes the kind's expired entries and,
	// past max entries, the oldest ones; evicted is how many of those
	// were live.
	PutWeb(ctx context.Context, kind string, key, value []byte, expires time.Time, max int, now time.Time) (evicted int, err error)
	// GetWeb returns the value of the live entry of that kind and key.
	GetWeb(ctx context.Context, kind string, key []byte, now time.Time) (value []byte, ok bool, err error)
	// TakeWeb removes the entry of that kind and key and returns its
	// value if it was live; of concurrent takes of one entry at most one
	// returns it.
	TakeWeb(ctx context.Context, kind string, key []byte, now time.Time) (value []byte, ok bool, err error)
	// UpdateWeb replaces the value and expiry of the live entry of that
	// kind and key, and reports false, changing nothing, if there is none.
	UpdateWeb(ctx context.Context, kind string, key, value []byte, expires, now time.Time) (ok bool, err error)
}

// memStore is the [Store] of a Manager without one: in memory, for one
// process and its tests.
type memStore struct {
	mu    sync.Mutex
	kinds map[string]*boundedStore[memEntry]
}

type memEntry struct {
	value   []byte
	expires time.Time
}

var _ Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{kinds: map[string]*boundedStore[memEntry]{}}
}

// kind returns the entries of kind; max, when positive, becomes their
// bound. The caller holds s.mu.
func (s *memStore) kind(kind string, max int) *boundedStore[memEntry] {
	b := s.kinds[kind]
	if b == nil {
		b = newBoundedStore(max, func(e memEntry, now time.Time) bool { return !now.Before(e.expires) })
		s.kinds[kind] = b
	}
	if max > 0 {
		b.max = max
	}
	return b
}

func (s *memStore) PutWeb(_ context.Context, kind string, key, value []byte, expires time.Time, max int, now time.Time) (int, error) {
	if max < 1 || len(value) > maxStoredValue {
		return 0, fmt.Errorf("put web %s: max %d or a value of %d bytes out of bounds", kind, max, len(value))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kind(kind, max).put(string(key), memEntry{slices.Clone(value), expires}, now), nil
}

func (s *memStore) GetWeb(_ context.Context, kind string, key []byte, now time.Time) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.kind(kind, 0)
	e, ok := b.get(string(key))
	if !ok {
		return nil, false, nil
	}
	if !now.Before(e.expires) {
		b.remove(string(key))
		return nil, false, nil
	}
	return slices.Clone(e.value), true, nil
}

func (s *memStore) TakeWeb(_ context.Context, kind string, key []byte, now time.Time) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.kind(kind, 0).remove(string(key))
	if !ok || !now.Before(e.expires) {
		return nil, false, nil
	}
	return e.value, true, nil
}

func (s *memStore) UpdateWeb(_ context.Context, kind string, key, value []byte, expires, now time.Time) (bool, error) {
	if len(value) > maxStoredValue {
		return false, fmt.Errorf("update web %s: a value of %d bytes is too large", kind, len(value))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.kind(kind, 0)
	e, ok := b.get(string(key))
	if !ok || !now.Before(e.expires) {
		return false, nil
	}
	b.set(string(key), memEntry{slices.Clone(value), expires})
	return true, nil
}

// len returns how many entries of kind are stored, expired or not.
func (s *memStore) len(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kind(kind, 0).len()
}

// boundedStore maps keys to values in insertion order, holds at most max
// entries (dropping the oldest) and removes expired entries a few at a
// time as new ones arrive. It is not safe for concurrent use; its owner
// locks it.
type boundedStore[V any] struct {
	max     int
	expired func(v V, now time.Time) bool
	m       map[string]*list.Element
	order   *list.List // of *storeEntry[V], oldest first
	// cursor is where the next sweep resumes, so that successive sweeps
	// visit every entry in turn; nil means the front.
	cursor *list.Element
}

type storeEntry[V any] struct {
	key string
	val V
}

func newBoundedStore[V any](max int, expired func(V, time.Time) bool) *boundedStore[V] {
	return &boundedStore[V]{max: max, expired: expired, m: map[string]*list.Element{}, order: list.New()}
}

func (s *boundedStore[V]) len() int { return s.order.Len() }

// get returns the value for key, expired or not.
func (s *boundedStore[V]) get(key string) (V, bool) {
	e, ok := s.m[key]
	if !ok {
		var zero V
		return zero, false
	}
	return e.Value.(*storeEntry[V]).val, true
}

// put stores v under key as the newest entry, drops the oldest entries
// past max and sweeps. It returns how many live entries were dropped to
// make room.
func (s *boundedStore[V]) put(key string, v V, now time.Time) (evicted int) {
	s.remove(key)
	s.m[key] = s.order.PushBack(&storeEntry[V]{key: key, val: v})
	s.sweep(now, sweepBatch)
	for s.order.Len() > s.max {
		front := s.order.Front()
		if !s.expired(front.Value.(*storeEntry[V]).val, now) {
			evicted++
		}
		s.removeElement(front)
	}
	return evicted
}

// set replaces the value of key, which must be stored, in its place.
func (s *boundedStore[V]) set(key string, v V) {
	s.m[key].Value.(*storeEntry[V]).val = v
}

// remove deletes key and returns its value.
func (s *boundedStore[V]) remove(key string) (V, bool) {
	e, ok := s.m[key]
	if !ok {
		var zero V
		return zero, false
	}
	s.removeElement(e)
	return e.Value.(*storeEntry[V]).val, true
}

func (s *boundedStore[V]) removeElement(e *list.Element) {
	if s.cursor == e {
		s.cursor = e.Next()
	}
	s.order.Remove(e)
	delete(s.m, e.Value.(*storeEntry[V]).key)
}

// sweep examines up to n entries, resuming where the last sweep stopped,
// and removes the expired ones.
func (s *boundedStore[V]) sweep(now time.Time, n int) {
	for range min(n, s.order.Len()) {
		e := s.cursor
		if e == nil {
			e = s.order.Front()
		}
		s.cursor = e.Next()
		if s.expired(e.Value.(*storeEntry[V]).val, now) {
			s.removeElement(e)
		}
	}
}
