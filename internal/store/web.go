package store

import (
	"context"
	"time"
)

// Kinds of web-console entries ([WebStore]).
const (
	// WebSession is a signed-in browser's session.
	WebSession = "session"
	// WebPending is a login or signing ceremony sent to an identity
	// provider and not yet back.
	WebPending = "pending"
)

// Bounds of a web-console entry ([WebStore]).
const (
	// WebKeyLen is the length of an entry's key: the SHA-256 of the
	// cookie that names it, never the cookie itself.
	WebKeyLen = 32
	// MaxWebValue bounds an entry's value.
	MaxWebValue = 64 << 10
)

// WebStore keeps the web console's sessions and pending logins, so that
// any broker sharing the database honours a session another made,
// completes a login another began, and a sign-out or expiry on one ends
// it on all; a restart signs nobody out. Entries of each kind
// ([WebSession], [WebPending]) are keyed by the SHA-256 of their cookie
// ([WebKeyLen] bytes) and hold an opaque value of at most [MaxWebValue]
// bytes until they expire. An entry is live while now is before its
// expiry; methods given now ignore entries that are not.
type WebStore interface {
	// PutWeb stores value under key until expires, replacing any entry
	// of that kind and key. It removes the kind's expired entries and,
	// past max entries, the oldest ones stored; evicted is how many of
	// those were still live.
	PutWeb(ctx context.Context, kind string, key, value []byte, expires time.Time, max int, now time.Time) (evicted int, err error)
	// GetWeb returns the value of the live entry of that kind and key;
	// ok is false when there is none.
	GetWeb(ctx context.Context, kind string, key []byte, now time.Time) (value []byte, ok bool, err error)
	// TakeWeb removes the entry of that kind and key and returns its
	// value if it was live. Of several concurrent takes of one entry, by
	// any brokers, at most one returns it.
	TakeWeb(ctx context.Context, kind string, key []byte, now time.Time) (value []byte, ok bool, err error)
	// UpdateWeb replaces the value and expiry of the live entry of that
	// kind and key; ok is false, and nothing changes, when there is none
	// (an entry taken meanwhile is not brought back).
	UpdateWeb(ctx context.Context, kind string, key, value []byte, expires, now time.Time) (ok bool, err error)
}
