package ghub

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/ghub/ghubtest"
)

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// get sends a GET for path with the Authorization header auth through rt
// and returns the status and decoded JSON body.
func get(t *testing.T, rt http.RoundTripper, base, path, auth string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil && err != io.EOF {
		t.Fatalf("GET %s: decode: %v", path, err)
	}
	return resp.StatusCode, body
}

func newCacheFixture(t *testing.T) (*ghubtest.Server, *testClock, *cacheTransport) {
	t.Helper()
	gh := ghubtest.NewServer(t)
	gh.AddToken("tok-a")
	gh.AddToken("tok-b")
	gh.AddIssue(ghubtest.Issue{Owner: "acme", Repo: "ops", Number: 1, Title: "one"})
	gh.AddIssue(ghubtest.Issue{Owner: "acme", Repo: "ops", Number: 2, Title: "two"})
	gh.AddIssue(ghubtest.Issue{Owner: "acme", Repo: "ops", Number: 3, Title: "three"})
	clk := &testClock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	return gh, clk, newCacheTransport(http.DefaultTransport, 30*time.Second, clk.Now)
}

// TestCacheIsolatesCredentials: a response cached for one credential is
// never served to another, above all not to a rejected one.
func TestCacheIsolatesCredentials(t *testing.T) {
	gh, _, ct := newCacheFixture(t)
	const path = "repos/acme/ops/issues/1"
	steps := []struct {
		auth       string
		wantStatus int
		wantSeen   int // requests GitHub has seen after this step
	}{
		{"token tok-a", 200, 1},
		{"token tok-a", 200, 1}, // cached for tok-a
		{"token tok-b", 200, 2}, // not tok-a's copy
		{"token tok-b", 200, 2},
		{"token tok-revoked", 401, 3},
		{"token tok-revoked", 401, 4}, // errors are not cached
		{"", 401, 5},
		{"token tok-a", 200, 5},
	}
	for i, s := range steps {
		status, body := get(t, ct, gh.URL(), path, s.auth)
		if status != s.wantStatus {
			t.Errorf("step %d: GET %s as %q = %d %v, want %d", i, path, s.auth, status, body, s.wantStatus)
		}
		if n := gh.Count(http.MethodGet, "/"+path); n != s.wantSeen {
			t.Errorf("step %d: GitHub saw %d requests, want %d", i, n, s.wantSeen)
		}
	}
}

func TestCacheBounds(t *testing.T) {
	gh, clk, ct := newCacheFixture(t)
	ct.maxEntries = 2
	for _, n := range []string{"1", "2", "3"} {
		get(t, ct, gh.URL(), "repos/acme/ops/issues/"+n, "token tok-a")
	}
	if n := ct.entries(); n != 2 {
		t.Errorf("cache holds %d entries, want its bound 2", n)
	}
	get(t, ct, gh.URL(), "repos/acme/ops/issues/1", "token tok-a") // evicted: refetched
	get(t, ct, gh.URL(), "repos/acme/ops/issues/3", "token tok-a") // still cached
	if n, m := gh.Count(http.MethodGet, "/repos/acme/ops/issues/1"), gh.Count(http.MethodGet, "/repos/acme/ops/issues/3"); n != 2 || m != 1 {
		t.Errorf("GitHub saw issue 1 %d times and issue 3 %d times, want 2 and 1", n, m)
	}

	// A body over the bound is passed on whole but not kept.
	ct.maxBody = 64
	clk.Advance(time.Minute)
	status, body := get(t, ct, gh.URL(), "repos/acme/ops/issues/2", "token tok-a")
	if status != 200 || body["title"] != "two" {
		t.Errorf("GET of a large issue = %d %v, want 200 with title two", status, body)
	}
	get(t, ct, gh.URL(), "repos/acme/ops/issues/2", "token tok-a")
	if n := gh.Count(http.MethodGet, "/repos/acme/ops/issues/2"); n != 3 {
		t.Errorf("GitHub saw the large issue %d times, want 3 (never cached)", n)
	}
}

func TestCacheConcurrent(t *testing.T) {
	gh, clk, ct := newCacheFixture(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if i%10 == 0 {
				clk.Advance(10 * time.Second)
			}
			path := []string{"repos/acme/ops/issues/1", "repos/acme/ops/issues/2"}[i%2]
			if status, body := get(t, ct, gh.URL(), path, "token tok-a"); status != 200 || body["number"] == nil {
				t.Errorf("GET %s = %d %v, want 200", path, status, body)
			}
		})
	}
	wg.Wait()
}

// TestAuthOrigin: credentials go to the API origin only, not to a host
// a redirect points at.
func TestAuthOrigin(t *testing.T) {
	var got []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	origin, _ := url.Parse(srv.URL + "/api/v3/")
	rt := &authTransport{next: http.DefaultTransport, src: staticToken("tok-a"), scheme: "token", origin: origin}

	other := "http://localhost:" + origin.Port() // same server, another host name
	for _, u := range []string{srv.URL + "/api/v3/x", other + "/elsewhere"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if len(got) != 2 || got[0] != "token tok-a" || got[1] != "" {
		t.Errorf("Authorization sent = %q, want the token to the origin only", got)
	}
}
