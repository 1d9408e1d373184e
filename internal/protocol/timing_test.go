package protocol

import (
	"net/http"
	"testing"
	"time"
)

func TestServerTimingRoundTrip(t *testing.T) {
	var st ServerTiming
	st.Add(TimingAuth, 213*time.Microsecond)
	st.Add(TimingUpstream, 1500*time.Millisecond)
	st.Add(TimingGuard, -time.Second) // clamped: a clock step must not show a negative hop
	got := ParseServerTiming(st.String())
	if len(got) != 3 {
		t.Fatalf("parsed %v from %q", got, st.String())
	}
	for _, want := range []struct {
		name string
		d    time.Duration
	}{{TimingAuth, 213 * time.Microsecond}, {TimingUpstream, 1500 * time.Millisecond}, {TimingGuard, 0}} {
		if d, ok := got.Get(want.name); !ok || d != want.d {
			t.Errorf("%s = %v, %v; want %v", want.name, d, ok, want.d)
		}
	}
}

func TestParseServerTimingSkipsJunk(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0},
		{"auth", 0},
		{"auth;desc=x", 0},
		{"auth;dur=x", 0},
		{"auth;dur=-1", 0},
		{";dur=1", 0},
		{`cache;desc="hit";dur=0.5, db;dur=12`, 2},
		{"a;dur=1,b;dur=2,,c;dur=3", 3},
	} {
		if got := ParseServerTiming(tc.in); len(got) != tc.want {
			t.Errorf("ParseServerTiming(%q) = %v, want %d entries", tc.in, got, tc.want)
		}
	}
}

func TestAcceptsZstd(t *testing.T) {
	for v, want := range map[string]bool{
		"":                             false,
		"gzip":                         false,
		"zstd":                         true,
		"ZSTD":                         true,
		"gzip, deflate, br, zstd":      true,
		"zstd;q=0.5":                   true,
		"zstd; q=1":                    true,
		"zstd;q=0":                     false,
		"zstd;q=0.000":                 false,
		"zstd;q=bogus":                 false,
		"zstdx, xzstd":                 false,
		"gzip;q=1.0, zstd ; q=0.1, br": true,
	} {
		h := http.Header{}
		if v != "" {
			h.Set("Accept-Encoding", v)
		}
		if got := AcceptsZstd(h); got != want {
			t.Errorf("AcceptsZstd(%q) = %v, want %v", v, got, want)
		}
	}
}
