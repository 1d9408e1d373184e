package ghub_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/ghub/ghubtest"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

const (
	testToken = "ghp_test0123456789abcdef"
	org       = "acme-corp"
	issuePath = "/repos/acme/ops/issues/7"
)

// clock is a manual clock shared by a client and the fake.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	gh  *ghubtest.Server
	clk *clock
	cfg ghub.Config
}

// newFixture starts a fake holding an open issue (acme/ops#7), a closed
// one (#8), a pull request (#9) and three teams of org acme-corp.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{gh: ghubtest.NewServer(t), clk: &clock{now: t0}}
	f.gh.SetClock(f.clk.Now)
	f.gh.AddToken(testToken)
	f.gh.AddIssue(ghubtest.Issue{
		Owner: "acme", Repo: "ops", Number: 7,
		Title:     "db primary down in eu-1",
		Labels:    []string{"sev1", "incident", "customer:globex"},
		Assignees: []string{"bob", "alice"},
		Author:    "carol",
		CreatedAt: t0.Add(-time.Hour),
	})
	f.gh.AddIssue(ghubtest.Issue{Owner: "acme", Repo: "ops", Number: 8, Title: "old outage", Author: "carol", Closed: true})
	f.gh.AddIssue(ghubtest.Issue{Owner: "acme", Repo: "ops", Number: 9, Title: "fix the outage", Author: "bob", PullRequest: true})

	f.gh.AddMember(org, "oncall", "alice")
	f.gh.AddPendingMember(org, "oncall", "bob")
	f.gh.AddMember(org, "platform", "alice")
	f.gh.AddMember(org, "platform", "dave")
	f.gh.AddTeam(org, "security")
	f.gh.AddMember(org, "sre", "alice") // not in cfg.Teams

	f.cfg = ghub.Config{
		BaseURL: f.gh.URL(),
		Token:   testToken,
		Org:     org,
		Teams:   []string{"oncall", "platform", "security"},
		Comment: true,
	}
	return f
}

func (f *fixture) client(t *testing.T, cfg ghub.Config) *ghub.Client {
	t.Helper()
	c, err := ghub.New(cfg, ghub.WithClock(f.clk.Now))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

var ticket7 = ghub.Ticket{
	Ref:       "acme/ops#7",
	Owner:     "acme",
	Repo:      "ops",
	Number:    7,
	Title:     "db primary down in eu-1",
	State:     "open",
	URL:       "https://github.example/acme/ops/issues/7",
	Labels:    []string{"customer:globex", "incident", "sev1"},
	Assignees: []string{"alice", "bob"},
	Author:    "carol",
	CreatedAt: t0.Add(-time.Hour),
}

func equalTicket(a, b ghub.Ticket) bool {
	return a.Ref == b.Ref && a.Owner == b.Owner && a.Repo == b.Repo && a.Number == b.Number &&
		a.Title == b.Title && a.State == b.State && a.URL == b.URL &&
		slices.Equal(a.Labels, b.Labels) && slices.Equal(a.Assignees, b.Assignees) &&
		a.Author == b.Author && a.CreatedAt.Equal(b.CreatedAt)
}

func TestTicket(t *testing.T) {
	f := newFixture(t)
	upper := ticket7
	upper.Ref, upper.Owner = "ACME/ops#7", "ACME"
	tests := []struct {
		ref      string
		want     ghub.Ticket
		wantErr  error
		wantMsg  string // in the error
		requests int
	}{
		{ref: "acme/ops#7", want: ticket7, requests: 1},
		{ref: "ACME/ops#7", want: upper, requests: 1},
		{ref: "acme/ops#8", wantErr: ghub.ErrTicketClosed, wantMsg: "acme/ops#8 is closed", requests: 1},
		{ref: "acme/ops#9", wantErr: ghub.ErrNotAnIssue, wantMsg: "acme/ops#9 is a pull request", requests: 1},
		{ref: "acme/ops#404", wantErr: ghub.ErrTicketNotFound, wantMsg: "acme/ops#404", requests: 1},
		{ref: "acme/nope#7", wantErr: ghub.ErrTicketNotFound, wantMsg: "acme/nope#7", requests: 1},
		{ref: "acme/ops#x", wantErr: ghub.ErrInvalidRef, wantMsg: "owner/repo#N"},
		{ref: "acme#1", wantErr: ghub.ErrInvalidRef, wantMsg: "owner/repo#N"},
		{ref: "acme/ops#0", wantErr: ghub.ErrInvalidRef, wantMsg: "owner/repo#N"},
		{ref: "acme/ops#-1", wantErr: ghub.ErrInvalidRef, wantMsg: "owner/repo#N"},
		{ref: "https://github.com/acme/ops/issues/7", wantErr: ghub.ErrInvalidRef, wantMsg: "is a URL"},
		{ref: "acme/../../orgs/x#1", wantErr: ghub.ErrInvalidRef, wantMsg: "owner/repo#N"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			c := f.client(t, f.cfg)
			before := len(f.gh.Requests())
			got, err := c.Ticket(context.Background(), tt.ref)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("Ticket(%q) = %+v, %v; want error %v mentioning %q", tt.ref, got, err, tt.wantErr, tt.wantMsg)
				}
				if !equalTicket(got, ghub.Ticket{}) {
					t.Errorf("Ticket(%q) = %+v with an error; want the zero Ticket", tt.ref, got)
				}
			} else if err != nil || !equalTicket(got, tt.want) {
				t.Errorf("Ticket(%q) = %+v, %v; want %+v", tt.ref, got, err, tt.want)
			}
			if n := len(f.gh.Requests()) - before; n != tt.requests {
				t.Errorf("Ticket(%q) made %d requests, want %d", tt.ref, n, tt.requests)
			}
		})
	}
}

func TestTicketFailures(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(f *fixture, cfg *ghub.Config)
		wantErr error
		wantMsg string
	}{
		{
			name:    "rate limited",
			setup:   func(f *fixture, _ *ghub.Config) { f.gh.RateLimit(t0.Add(time.Hour)) },
			wantErr: ghub.ErrRateLimited,
			wantMsg: "retry after 2026-11-25T13:00:00Z",
		},
		{
			name:    "secondary rate limited",
			setup:   func(f *fixture, _ *ghub.Config) { f.gh.AbuseLimit(90 * time.Second) },
			wantErr: ghub.ErrRateLimited,
			wantMsg: "retry after 2026-11-25T12:01:30Z (in 1m30s)",
		},
		{
			name:    "500",
			setup:   func(f *fixture, _ *ghub.Config) { f.gh.Fail(http.StatusInternalServerError) },
			wantErr: ghub.ErrUnavailable,
			wantMsg: "github failed (500); try again later",
		},
		{
			name:    "502",
			setup:   func(f *fixture, _ *ghub.Config) { f.gh.Fail(http.StatusBadGateway) },
			wantErr: ghub.ErrUnavailable,
			wantMsg: "github failed (502)",
		},
		{
			name:    "connection refused",
			setup:   func(f *fixture, _ *ghub.Config) { f.gh.Close() },
			wantErr: ghub.ErrUnavailable,
			wantMsg: "cannot reach github",
		},
		{
			name:    "bad token",
			setup:   func(_ *fixture, cfg *ghub.Config) { cfg.Token = "ghp_revoked0123456789" },
			wantErr: ghub.ErrUnauthorized,
			wantMsg: "check the token",
		},
		{
			name:    "forbidden",
			setup:   func(f *fixture, _ *ghub.Config) { f.gh.Fail(http.StatusForbidden) },
			wantErr: ghub.ErrUnauthorized,
			wantMsg: "read access to issues",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.cfg
			tt.setup(f, &cfg)
			c := f.client(t, cfg)
			got, err := c.Ticket(context.Background(), "acme/ops#7")
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Ticket(%q) = %+v, %v; want error %v mentioning %q", "acme/ops#7", got, err, tt.wantErr, tt.wantMsg)
			}
			if err != nil && (strings.Contains(err.Error(), cfg.Token) || strings.Contains(err.Error(), testToken)) {
				t.Errorf("Ticket error %q holds the token", err)
			}
		})
	}
}

func TestTicketCanceled(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, f.cfg)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Ticket(ctx, "acme/ops#7")
	if !errors.Is(err, context.Canceled) || errors.Is(err, ghub.ErrUnavailable) {
		t.Errorf("Ticket(canceled ctx) = %v, want context.Canceled and not ErrUnavailable", err)
	}
}

func TestTicketTransferred(t *testing.T) {
	f := newFixture(t)
	f.gh.TransferIssue("acme/ops#7", "acme", "archive", 70)
	c := f.client(t, f.cfg)
	_, err := c.Ticket(context.Background(), "acme/ops#7")
	if !errors.Is(err, ghub.ErrTicketNotFound) || !strings.Contains(err.Error(), "moved to acme/archive#70") {
		t.Errorf("Ticket(%q) = %v, want ErrTicketNotFound naming acme/archive#70", "acme/ops#7", err)
	}
	got, err := c.Ticket(context.Background(), "acme/archive#70")
	if err != nil || got.Ref != "acme/archive#70" {
		t.Errorf("Ticket(%q) = %+v, %v; want the moved issue", "acme/archive#70", got, err)
	}
}

// TestTicketCache walks an issue through the cache: fresh within the
// TTL, revalidated with If-None-Match (a 304) after it, and refetched
// when GitHub's copy has changed.
func TestTicketCache(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, f.cfg) // default TTL, 30s
	ctx := context.Background()

	check := func(step string, want ghub.Ticket, wantErr error, wantRequests int, wantINM bool, wantStatus int) {
		t.Helper()
		got, err := c.Ticket(ctx, "acme/ops#7")
		if wantErr != nil {
			if !errors.Is(err, wantErr) {
				t.Errorf("%s: Ticket(%q) = %+v, %v; want %v", step, "acme/ops#7", got, err, wantErr)
			}
		} else if err != nil || !equalTicket(got, want) {
			t.Errorf("%s: Ticket(%q) = %+v, %v; want %+v", step, "acme/ops#7", got, err, want)
		}
		if n := f.gh.Count(http.MethodGet, issuePath); n != wantRequests {
			t.Errorf("%s: GitHub saw %d requests, want %d", step, n, wantRequests)
		}
		last, _ := f.gh.Last(http.MethodGet, issuePath)
		if inm := last.Header.Get("If-None-Match"); (inm != "") != wantINM {
			t.Errorf("%s: last request If-None-Match = %q, want one: %t", step, inm, wantINM)
		}
		if last.Status != wantStatus {
			t.Errorf("%s: last response status = %d, want %d", step, last.Status, wantStatus)
		}
	}

	check("first", ticket7, nil, 1, false, http.StatusOK)
	f.clk.Advance(29 * time.Second)
	check("within ttl", ticket7, nil, 1, false, http.StatusOK)
	f.clk.Advance(2 * time.Second)
	check("after ttl", ticket7, nil, 2, true, http.StatusNotModified)
	f.clk.Advance(20 * time.Second)
	check("within ttl of revalidation", ticket7, nil, 2, true, http.StatusNotModified)

	f.gh.UpdateIssue("acme/ops#7", func(is *ghubtest.Issue) { is.Labels = append(is.Labels, "sev0") })
	f.clk.Advance(11 * time.Second)
	relabelled := ticket7
	relabelled.Labels = []string{"customer:globex", "incident", "sev0", "sev1"}
	check("changed", relabelled, nil, 3, true, http.StatusOK)

	f.gh.CloseIssue("acme/ops#7")
	f.clk.Advance(time.Second)
	check("closed, within ttl", relabelled, nil, 3, true, http.StatusOK)
	f.clk.Advance(30 * time.Second)
	check("closed, after ttl", ghub.Ticket{}, ghub.ErrTicketClosed, 4, true, http.StatusOK)
}

func TestCacheTTLConfig(t *testing.T) {
	f := newFixture(t)
	cfg := f.cfg
	cfg.CacheTTL = 2 * time.Minute
	c := f.client(t, cfg)
	for _, step := range []time.Duration{0, 90 * time.Second, 31 * time.Second} {
		f.clk.Advance(step)
		if _, err := c.Ticket(context.Background(), "acme/ops#7"); err != nil {
			t.Fatalf("Ticket(%q) = %v, want nil", "acme/ops#7", err)
		}
	}
	if n := f.gh.Count(http.MethodGet, issuePath); n != 2 {
		t.Errorf("with a 2m TTL over 2m1s GitHub saw %d requests, want 2", n)
	}
}

func TestTeams(t *testing.T) {
	f := newFixture(t)
	all := f.cfg
	all.Teams = nil
	tests := []struct {
		login string
		cfg   ghub.Config
		want  []string
	}{
		{"alice", f.cfg, []string{"oncall", "platform"}},
		{"Alice", f.cfg, []string{"oncall", "platform"}},
		{"bob", f.cfg, []string{}}, // pending
		{"dave", f.cfg, []string{"platform"}},
		{"eve", f.cfg, []string{}},
		{"alice", all, []string{"oncall", "platform", "sre"}},
		{"bob", all, []string{}},
		{"dave", all, []string{"platform"}},
	}
	for _, tt := range tests {
		name := tt.login + "/configured"
		if len(tt.cfg.Teams) == 0 {
			name = tt.login + "/all"
		}
		t.Run(name, func(t *testing.T) {
			c := f.client(t, tt.cfg)
			got, err := c.Teams(context.Background(), tt.login)
			if err != nil || got == nil || !slices.Equal(got, tt.want) {
				t.Errorf("Teams(%q) = %q, %v; want %q", tt.login, got, err, tt.want)
			}
		})
	}
}

func TestTeamsListingIsBounded(t *testing.T) {
	f := newFixture(t)
	for i := range 250 {
		f.gh.AddTeam("big", fmt.Sprintf("t%03d", i))
	}
	f.gh.AddMember("big", "t005", "alice")
	f.gh.AddMember("big", "t150", "alice")
	f.gh.AddMember("big", "t220", "alice") // past the first 200
	cfg := f.cfg
	cfg.Org, cfg.Teams = "big", nil
	c := f.client(t, cfg)

	got, err := c.Teams(context.Background(), "alice")
	if want := []string{"t005", "t150"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Teams(%q) = %q, %v; want %q", "alice", got, err, want)
	}
	if n := f.gh.Count(http.MethodGet, "/orgs/big/teams"); n != 2 {
		t.Errorf("listing teams took %d pages, want 2 of 100", n)
	}
	memberships := 0
	for _, r := range f.gh.Requests() {
		if strings.HasPrefix(r.Path, "/orgs/big/teams/") {
			memberships++
		}
	}
	if memberships != ghub.MaxTeams {
		t.Errorf("checked %d memberships, want %d", memberships, ghub.MaxTeams)
	}
}

func TestTeamsErrors(t *testing.T) {
	tests := []struct {
		name    string
		login   string
		setup   func(f *fixture, cfg *ghub.Config)
		wantErr error
		wantMsg string
	}{
		{"empty login", "", nil, ghub.ErrInvalidLogin, "not a GitHub login"},
		{"leading hyphen", "-alice", nil, ghub.ErrInvalidLogin, "not a GitHub login"},
		{"trailing hyphen", "alice-", nil, ghub.ErrInvalidLogin, "not a GitHub login"},
		{"double hyphen", "al--ice", nil, ghub.ErrInvalidLogin, "not a GitHub login"},
		{"underscore", "al_ice", nil, ghub.ErrInvalidLogin, "not a GitHub login"},
		{"path", "alice/../x", nil, ghub.ErrInvalidLogin, "not a GitHub login"},
		{"too long", strings.Repeat("a", 40), nil, ghub.ErrInvalidLogin, "not a GitHub login"},
		{"down", "alice", func(f *fixture, _ *ghub.Config) { f.gh.Fail(http.StatusServiceUnavailable) }, ghub.ErrUnavailable, "team membership of alice"},
		{"rate limited", "alice", func(f *fixture, _ *ghub.Config) { f.gh.RateLimit(t0.Add(time.Minute)) }, ghub.ErrRateLimited, "retry after 2026-11-25T12:01:00Z"},
		{"listing rate limited", "alice", func(f *fixture, cfg *ghub.Config) {
			cfg.Teams = nil
			f.gh.AbuseLimit(time.Minute)
		}, ghub.ErrRateLimited, "list the teams of github org acme-corp"},
		{"bad token", "alice", func(_ *fixture, cfg *ghub.Config) { cfg.Token = "ghp_revoked0123456789" }, ghub.ErrUnauthorized, "(401)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.cfg
			if tt.setup != nil {
				tt.setup(f, &cfg)
			}
			c := f.client(t, cfg)
			got, err := c.Teams(context.Background(), tt.login)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) || got != nil {
				t.Errorf("Teams(%q) = %q, %v; want error %v mentioning %q", tt.login, got, err, tt.wantErr, tt.wantMsg)
			}
			if tt.setup == nil && len(f.gh.Requests()) != 0 {
				t.Errorf("Teams(%q) made %d requests for an invalid login, want 0", tt.login, len(f.gh.Requests()))
			}
		})
	}

	t.Run("unknown org", func(t *testing.T) {
		f := newFixture(t)
		cfg := f.cfg
		cfg.Org, cfg.Teams = "ghost", nil
		got, err := f.client(t, cfg).Teams(context.Background(), "alice")
		if err == nil || !strings.Contains(err.Error(), "check org") {
			t.Errorf("Teams(%q) in an unknown org = %q, %v; want an error saying to check org", "alice", got, err)
		}
	})
}

func TestAppAuth(t *testing.T) {
	f := newFixture(t)
	keyPEM, pub := ghubtest.NewAppKey(t)
	f.gh.SetApp(42, 4242, pub)
	cfg := f.cfg
	cfg.Token = ""
	cfg.App = &ghub.AppConfig{AppID: 42, InstallationID: 4242, PrivateKeyPEM: keyPEM}
	c := f.client(t, cfg)
	ctx := context.Background()
	tokenPath := "/app/installations/4242/access_tokens"

	// A burst of first requests makes one exchange.
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if got, err := c.Ticket(ctx, "acme/ops#7"); err != nil || !equalTicket(got, ticket7) {
				t.Errorf("Ticket(%q) = %+v, %v; want %+v", "acme/ops#7", got, err, ticket7)
			}
		})
	}
	wg.Wait()
	if n := f.gh.InstallationTokens(); n != 1 {
		t.Fatalf("after a burst of requests GitHub issued %d installation tokens, want 1", n)
	}

	// The fake validated the JWT; check the claims GitHub advises too.
	ex, _ := f.gh.Last(http.MethodPost, tokenPath)
	raw, ok := strings.CutPrefix(ex.Header.Get("Authorization"), "Bearer ")
	if !ok {
		t.Fatalf("token exchange Authorization = %q, want a Bearer JWT", ex.Header.Get("Authorization"))
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.Claims
	if err := tok.Claims(pub, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Issuer != "42" || !claims.IssuedAt.Time().Equal(t0.Add(-time.Minute)) || !claims.Expiry.Time().Equal(t0.Add(9*time.Minute)) {
		t.Errorf("app JWT claims iss=%q iat=%v exp=%v; want 42, %v, %v", claims.Issuer, claims.IssuedAt.Time(), claims.Expiry.Time(), t0.Add(-time.Minute), t0.Add(9*time.Minute))
	}

	authOf := func(path string) string {
		r, _ := f.gh.Last(http.MethodGet, path)
		return r.Header.Get("Authorization")
	}
	if got := authOf(issuePath); got != "token ghs_fake0001" {
		t.Errorf("issue request Authorization = %q, want %q", got, "token ghs_fake0001")
	}

	if _, err := c.Teams(ctx, "alice"); err != nil {
		t.Fatalf("Teams(%q) = %v", "alice", err)
	}
	// 58 minutes on, the token (valid for an hour) is still reused.
	f.clk.Advance(58 * time.Minute)
	if _, err := c.Ticket(ctx, "acme/ops#7"); err != nil {
		t.Fatalf("Ticket(%q) after 58m = %v", "acme/ops#7", err)
	}
	if n := f.gh.InstallationTokens(); n != 1 {
		t.Errorf("after 58m GitHub issued %d installation tokens, want 1", n)
	}

	// Within a minute of expiry it is replaced, and the cache does not
	// carry the old credential's response over to the new one.
	f.clk.Advance(time.Minute + time.Second)
	if got, err := c.Ticket(ctx, "acme/ops#7"); err != nil || !equalTicket(got, ticket7) {
		t.Fatalf("Ticket(%q) after 59m1s = %+v, %v; want %+v", "acme/ops#7", got, err, ticket7)
	}
	if n := f.gh.InstallationTokens(); n != 2 {
		t.Errorf("after 59m1s GitHub issued %d installation tokens, want 2", n)
	}
	last, _ := f.gh.Last(http.MethodGet, issuePath)
	if got := last.Header.Get("Authorization"); got != "token ghs_fake0002" {
		t.Errorf("issue request Authorization = %q, want %q", got, "token ghs_fake0002")
	}
	if inm := last.Header.Get("If-None-Match"); inm != "" {
		t.Errorf("first request with a new credential sent If-None-Match %q, want none", inm)
	}
}

func TestAppAuthFailures(t *testing.T) {
	otherPEM, _ := ghubtest.NewAppKey(t)
	keyPEM, pub := ghubtest.NewAppKey(t)
	tests := []struct {
		name    string
		app     ghub.AppConfig
		wantMsg string
	}{
		{"wrong key", ghub.AppConfig{AppID: 42, InstallationID: 4242, PrivateKeyPEM: otherPEM}, "private_key_pem is a current key"},
		{"wrong app", ghub.AppConfig{AppID: 43, InstallationID: 4242, PrivateKeyPEM: keyPEM}, "check app_id"},
		{"wrong installation", ghub.AppConfig{AppID: 42, InstallationID: 4243, PrivateKeyPEM: keyPEM}, "check installation_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.gh.SetApp(42, 4242, pub)
			cfg := f.cfg
			cfg.Token, cfg.App = "", &tt.app
			got, err := f.client(t, cfg).Ticket(context.Background(), "acme/ops#7")
			if !errors.Is(err, ghub.ErrUnauthorized) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Ticket(%q) = %+v, %v; want ErrUnauthorized mentioning %q", "acme/ops#7", got, err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("Ticket error %q quotes the private key", err)
			}
			if n := f.gh.Count(http.MethodGet, issuePath); n != 0 {
				t.Errorf("without an installation token the issue was requested %d times, want 0", n)
			}
		})
	}
}

func TestAppAuthRateLimited(t *testing.T) {
	f := newFixture(t)
	keyPEM, pub := ghubtest.NewAppKey(t)
	f.gh.SetApp(42, 4242, pub)
	f.gh.RateLimit(t0.Add(10 * time.Minute))
	cfg := f.cfg
	cfg.Token, cfg.App = "", &ghub.AppConfig{AppID: 42, InstallationID: 4242, PrivateKeyPEM: keyPEM}
	_, err := f.client(t, cfg).Ticket(context.Background(), "acme/ops#7")
	if !errors.Is(err, ghub.ErrRateLimited) || !strings.Contains(err.Error(), "retry after 2026-11-25T12:10:00Z") {
		t.Errorf("Ticket(%q) = %v, want ErrRateLimited with the reset time", "acme/ops#7", err)
	}
}

func TestComment(t *testing.T) {
	ref := ghub.TicketRef{Owner: "acme", Repo: "ops", Number: 7}
	tests := []struct {
		name     string
		on       bool
		ref      ghub.TicketRef
		body     string
		wantErr  error  // sentinel, if any
		wantMsg  string // in the error; empty means success
		wantPost bool
	}{
		{name: "posts", on: true, ref: ref, body: "access granted to alice until 13:00Z", wantPost: true},
		{name: "largest", on: true, ref: ref, body: strings.Repeat("x", ghub.MaxCommentSize), wantPost: true},
		{name: "off", on: false, ref: ref, body: "access granted"},
		{name: "too large", on: true, ref: ref, body: strings.Repeat("x", ghub.MaxCommentSize+1), wantMsg: "over 8192"},
		{name: "empty", on: true, ref: ref, body: " \n", wantMsg: "comment is empty"},
		{name: "not utf-8", on: true, ref: ref, body: "\xff", wantMsg: "not valid UTF-8"},
		{name: "bad ref", on: true, ref: ghub.TicketRef{Owner: "acme", Repo: "ops/x", Number: 7}, body: "hi", wantErr: ghub.ErrInvalidRef, wantMsg: "owner/repo#N"},
		{name: "zero ref", on: true, body: "hi", wantErr: ghub.ErrInvalidRef, wantMsg: "owner/repo#N"},
		{name: "no such issue", on: true, ref: ghub.TicketRef{Owner: "acme", Repo: "ops", Number: 404}, body: "hi", wantErr: ghub.ErrTicketNotFound, wantMsg: "acme/ops#404", wantPost: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.cfg
			cfg.Comment = tt.on
			err := f.client(t, cfg).Comment(context.Background(), tt.ref, tt.body)
			switch {
			case tt.wantMsg == "" && err != nil:
				t.Errorf("Comment(%v, %d bytes) = %v, want nil", tt.ref, len(tt.body), err)
			case tt.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tt.wantMsg)):
				t.Errorf("Comment(%v, %d bytes) = %v, want an error mentioning %q", tt.ref, len(tt.body), err, tt.wantMsg)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("Comment(%v, %d bytes) = %v, want %v", tt.ref, len(tt.body), err, tt.wantErr)
			}
			posts := 0
			for _, r := range f.gh.Requests() {
				if r.Method == http.MethodPost {
					posts++
				}
			}
			if (posts > 0) != tt.wantPost {
				t.Errorf("Comment(%v) made %d POSTs, want any: %t", tt.ref, posts, tt.wantPost)
			}
			comments := f.gh.Comments()
			if tt.wantPost && tt.wantMsg == "" {
				want := ghubtest.Comment{Ref: "acme/ops#7", Body: tt.body, Authorization: "token " + testToken}
				if len(comments) != 1 || comments[0] != want {
					t.Errorf("GitHub holds comments %+v, want one: %+v", comments, want)
				}
			} else if len(comments) != 0 {
				t.Errorf("GitHub holds comments %+v, want none", comments)
			}
		})
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	_, err := ghub.New(ghub.Config{Org: "acme-corp"})
	if err == nil || !strings.Contains(err.Error(), "no credentials") {
		t.Errorf("New(no credentials) = %v, want an error saying so", err)
	}
}
