package storetest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// webTests check [store.WebStore].
var webTests = []struct {
	name string
	test func(t *testing.T, s store.Store)
}{
	{"WebEntries", testWebEntries},
	{"WebExpiry", testWebExpiry},
	{"WebBounded", testWebBounded},
	{"WebRefused", testWebRefused},
	{"WebConcurrentTakes", testWebConcurrentTakes},
}

func webKey(name string) []byte {
	k := sha256.Sum256([]byte(name))
	return k[:]
}

var webT0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func putWeb(t *testing.T, s store.Store, kind, key, value string, expires time.Time, max int, now time.Time) int {
	t.Helper()
	n, err := s.PutWeb(t.Context(), kind, webKey(key), []byte(value), expires, max, now)
	if err != nil {
		t.Fatalf("PutWeb(%s, %s) error = %v", kind, key, err)
	}
	return n
}

// checkWeb fails unless GetWeb at now finds want (or nothing, for "").
func checkWeb(t *testing.T, s store.Store, kind, key, want string, now time.Time) {
	t.Helper()
	got, ok, err := s.GetWeb(t.Context(), kind, webKey(key), now)
	if err != nil {
		t.Fatalf("GetWeb(%s, %s) error = %v", kind, key, err)
	}
	if want == "" && ok {
		t.Errorf("GetWeb(%s, %s) at %v = %q, want none", kind, key, now.Format(time.TimeOnly), got)
	}
	if want != "" && (!ok || string(got) != want) {
		t.Errorf("GetWeb(%s, %s) at %v = %q, %v, want %q", kind, key, now.Format(time.TimeOnly), got, ok, want)
	}
}

func testWebEntries(t *testing.T, s store.Store) {
	ctx := t.Context()
	exp := webT0.Add(time.Hour)
	putWeb(t, s, store.WebSession, "a", `{"user":"a"}`, exp, 10, webT0)
	putWeb(t, s, store.WebPending, "a", `{"pending":"a"}`, exp, 10, webT0)
	// Kinds are apart.
	checkWeb(t, s, store.WebSession, "a", `{"user":"a"}`, webT0)
	checkWeb(t, s, store.WebPending, "a", `{"pending":"a"}`, webT0)
	checkWeb(t, s, store.WebSession, "b", "", webT0)
	// A put under the same key replaces the entry.
	putWeb(t, s, store.WebSession, "a", `{"user":"a2"}`, exp, 10, webT0)
	checkWeb(t, s, store.WebSession, "a", `{"user":"a2"}`, webT0)

	// An update changes value and expiry; it never creates.
	ok, err := s.UpdateWeb(ctx, store.WebSession, webKey("a"), []byte(`{"user":"a3"}`), exp.Add(time.Hour), webT0)
	if err != nil || !ok {
		t.Fatalf("UpdateWeb(a) = %v, %v, want true", ok, err)
	}
	checkWeb(t, s, store.WebSession, "a", `{"user":"a3"}`, exp.Add(time.Minute))
	if ok, err := s.UpdateWeb(ctx, store.WebSession, webKey("b"), []byte("x"), exp, webT0); err != nil || ok {
		t.Errorf("UpdateWeb(b) of no entry = %v, %v, want false", ok, err)
	}
	checkWeb(t, s, store.WebSession, "b", "", webT0)

	// A take returns the entry once; an update then finds nothing.
	got, ok, err := s.TakeWeb(ctx, store.WebPending, webKey("a"), webT0)
	if err != nil || !ok || string(got) != `{"pending":"a"}` {
		t.Fatalf("TakeWeb(pending a) = %q, %v, %v, want the entry", got, ok, err)
	}
	if got, ok, err := s.TakeWeb(ctx, store.WebPending, webKey("a"), webT0); err != nil || ok {
		t.Errorf("second TakeWeb(pending a) = %q, %v, %v, want none", got, ok, err)
	}
	if ok, err := s.UpdateWeb(ctx, store.WebPending, webKey("a"), []byte("x"), exp, webT0); err != nil || ok {
		t.Errorf("UpdateWeb(pending a) after take = %v, %v, want false", ok, err)
	}
	checkWeb(t, s, store.WebPending, "a", "", webT0)
	checkWeb(t, s, store.WebSession, "a", `{"user":"a3"}`, webT0)

	// Values are bytes, kept exactly, up to the bound.
	big := bytes.Repeat([]byte{0, 0xff, '"', '\''}, store.MaxWebValue/4)
	if _, err := s.PutWeb(ctx, store.WebSession, webKey("big"), big, exp, 10, webT0); err != nil {
		t.Fatalf("PutWeb of %d bytes: %v", len(big), err)
	}
	if got, ok, err := s.GetWeb(ctx, store.WebSession, webKey("big"), webT0); err != nil || !ok || !bytes.Equal(got, big) {
		t.Errorf("GetWeb(big) = %d bytes, %v, %v, want the %d bytes put", len(got), ok, err, len(big))
	}
}

func testWebExpiry(t *testing.T, s store.Store) {
	ctx := t.Context()
	exp := webT0.Add(10 * time.Minute)
	putWeb(t, s, store.WebSession, "s", "v", exp, 10, webT0)
	checkWeb(t, s, store.WebSession, "s", "v", exp.Add(-time.Millisecond))
	checkWeb(t, s, store.WebSession, "s", "", exp)
	// An expired entry cannot be updated back to life, nor taken.
	if ok, err := s.UpdateWeb(ctx, store.WebSession, webKey("s"), []byte("v2"), exp.Add(time.Hour), exp); err != nil || ok {
		t.Errorf("UpdateWeb of an expired entry = %v, %v, want false", ok, err)
	}
	checkWeb(t, s, store.WebSession, "s", "", exp)
	if got, ok, err := s.TakeWeb(ctx, store.WebSession, webKey("s"), exp); err != nil || ok {
		t.Errorf("TakeWeb of an expired entry = %q, %v, %v, want none", got, ok, err)
	}
}

func testWebBounded(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Six entries, every other one short-lived, with max 6.
	for i := range 6 {
		exp := webT0.Add(time.Hour)
		if i%2 == 1 {
			exp = webT0.Add(time.Minute)
		}
		if n := putWeb(t, s, store.WebPending, fmt.Sprint(i), fmt.Sprint(i), exp, 6, webT0); n != 0 {
			t.Errorf("put #%d of max 6 evicted %d", i, n)
		}
	}
	// Once the short-lived ones expired, a put sweeps them: nothing live
	// is evicted.
	later := webT0.Add(2 * time.Minute)
	if n := putWeb(t, s, store.WebPending, "6", "6", webT0.Add(time.Hour), 6, later); n != 0 {
		t.Errorf("put after 3 expired evicted %d live entries, want 0", n)
	}
	// Past max, the oldest live ones go.
	for i := 7; i < 10; i++ {
		putWeb(t, s, store.WebPending, fmt.Sprint(i), fmt.Sprint(i), webT0.Add(time.Hour), 6, later)
	}
	if n := putWeb(t, s, store.WebPending, "10", "10", webT0.Add(time.Hour), 6, later); n != 1 {
		t.Errorf("put of a 7th live entry with max 6 evicted %d, want 1", n)
	}
	var live []string
	for i := range 11 {
		if _, ok, err := s.GetWeb(ctx, store.WebPending, webKey(fmt.Sprint(i)), later); err != nil {
			t.Fatal(err)
		} else if ok {
			live = append(live, fmt.Sprint(i))
		}
	}
	if got, want := strings.Join(live, ","), "4,6,7,8,9,10"; got != want {
		t.Errorf("live entries = %s, want %s (the newest 6)", got, want)
	}
	// The bound is per kind.
	checkWeb(t, s, store.WebSession, "10", "", later)
	putWeb(t, s, store.WebSession, "x", "x", webT0.Add(time.Hour), 1, later)
	checkWeb(t, s, store.WebPending, "10", "10", later)
}

func testWebRefused(t *testing.T, s store.Store) {
	ctx := t.Context()
	exp := webT0.Add(time.Hour)
	for _, tt := range []struct {
		name       string
		kind       string
		key, value []byte
		max        int
	}{
		{"unknown kind", "audit", webKey("k"), []byte("v"), 10},
		{"raw cookie as key", store.WebSession, []byte("Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5"), []byte("v"), 10},
		{"empty key", store.WebSession, nil, []byte("v"), 10},
		{"value too large", store.WebSession, webKey("k"), make([]byte, store.MaxWebValue+1), 10},
		{"max 0", store.WebSession, webKey("k"), []byte("v"), 0},
	} {
		if _, err := s.PutWeb(ctx, tt.kind, tt.key, tt.value, exp, tt.max, webT0); err == nil {
			t.Errorf("PutWeb with %s = nil error, want refused", tt.name)
		}
	}
	if _, _, err := s.GetWeb(ctx, "audit", webKey("k"), webT0); err == nil {
		t.Errorf("GetWeb of an unknown kind = nil error, want refused")
	}
	checkWeb(t, s, store.WebSession, "k", "", webT0)
}

// testWebConcurrentTakes: of many takes of one pending login at once,
// one gets it (a login completes once, whichever broker the callbacks
// reach).
func testWebConcurrentTakes(t *testing.T, s store.Store) {
	putWeb(t, s, store.WebPending, "once", "v", webT0.Add(time.Hour), 10, webT0)
	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range n {
		wg.Go(func() {
			_, ok, err := s.TakeWeb(t.Context(), store.WebPending, webKey("once"), webT0)
			if err != nil {
				t.Errorf("TakeWeb: %v", err)
			}
			if ok {
				mu.Lock()
				got++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got != 1 {
		t.Errorf("%d of %d concurrent takes got the entry, want 1", got, n)
	}
}
