package weblogin

import (
	"container/list"
	"time"
)

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
