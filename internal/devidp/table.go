package devidp

import (
	"container/list"
	"crypto/sha256"
	"time"
)

// table is a bounded map whose entries expire. Every entry of a table
// lives equally long, so insertion order is expiry order: expired
// entries are swept from the front, and when the table is full the
// oldest entry is dropped to make room. It is not safe for concurrent
// use; the issuer's mutex guards it.
type table[V any] struct {
	ttl   time.Duration
	max   int
	m     map[string]*list.Element
	order list.List // of *row[V], oldest first
}

type row[V any] struct {
	key     string
	val     V
	expires time.Time
}

func newTable[V any](ttl time.Duration) *table[V] {
	return &table[V]{ttl: ttl, max: maxPending, m: map[string]*list.Element{}}
}

// put adds v under key, which must not be in the table.
func (t *table[V]) put(now time.Time, key string, v V) {
	t.sweep(now)
	for t.order.Len() >= t.max {
		t.remove(t.order.Front())
	}
	t.m[key] = t.order.PushBack(&row[V]{key: key, val: v, expires: now.Add(t.ttl)})
}

// get returns the live entry under key.
func (t *table[V]) get(now time.Time, key string) (V, bool) {
	t.sweep(now)
	e, ok := t.m[key]
	if !ok {
		var zero V
		return zero, false
	}
	return e.Value.(*row[V]).val, true
}

// take returns the live entry under key and removes it.
func (t *table[V]) take(now time.Time, key string) (V, bool) {
	v, ok := t.get(now, key)
	if ok {
		t.delete(key)
	}
	return v, ok
}

func (t *table[V]) delete(key string) {
	if e, ok := t.m[key]; ok {
		t.remove(e)
	}
}

func (t *table[V]) len() int { return t.order.Len() }

func (t *table[V]) sweep(now time.Time) {
	for e := t.order.Front(); e != nil && !now.Before(e.Value.(*row[V]).expires); e = t.order.Front() {
		t.remove(e)
	}
}

func (t *table[V]) remove(e *list.Element) {
	delete(t.m, e.Value.(*row[V]).key)
	t.order.Remove(e)
}

// secretKey is the table key of a secret (a code, device code or refresh
// token): looking up its hash rather than the secret itself keeps the
// map's timing from leaking anything useful about live secrets.
func secretKey(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return string(h[:])
}
