// Package ghub asks GitHub the two questions the broker needs answered
// before granting just-in-time access: is the cited incident ticket an
// open issue ([Client.Ticket]), and which of the vendor org's teams is the
// engineer an active member of ([Client.Teams]). It can also note a
// grant on the ticket ([Client.Comment]).
//
// It talks to github.com or GitHub Enterprise Server through go-github,
// authenticated with a token or as a GitHub App installation (app JWTs
// signed with go-jose, installation tokens cached until a minute before
// expiry). GET responses are reused for [Config.CacheTTL] and then
// revalidated with their ETag, which GitHub answers with a 304 that does
// not count against the rate limit; cached responses are keyed by
// credential as well as URL.
//
// Errors wrap the sentinel errors below where a caller may branch on
// them (to say "retry later" rather than "cite another ticket"), but the
// caller must refuse access on any error: a GitHub outage, rate limit or
// cancelled request never reads as an open ticket or a team membership.
package ghub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/go-github/v60/github"
)

// Sentinel errors callers branch on.
var (
	// ErrInvalidRef means a ticket ref is not owner/repo#N; no request
	// was made.
	ErrInvalidRef = errors.New("invalid ticket ref")
	// ErrInvalidLogin means a GitHub login breaks GitHub's rules; no
	// request was made.
	ErrInvalidLogin = errors.New("invalid github login")
	// ErrTicketNotFound means the issue does not exist, is not visible to
	// the broker's credentials, or has moved to another repository.
	ErrTicketNotFound = errors.New("ticket not found")
	// ErrNotAnIssue means the ref names a pull request.
	ErrNotAnIssue = errors.New("ticket is a pull request, not an issue")
	// ErrTicketClosed means the issue is closed.
	ErrTicketClosed = errors.New("ticket closed")
	// ErrRateLimited means GitHub's primary or secondary rate limit
	// refused the request; the message says when to retry.
	ErrRateLimited = errors.New("github rate limit exceeded")
	// ErrUnavailable means GitHub could not be reached or failed (5xx,
	// network error, timeout, unreadable response).
	ErrUnavailable = errors.New("github unavailable")
	// ErrUnauthorized means GitHub refused the broker's credentials
	// (401) or their permissions (403).
	ErrUnauthorized = errors.New("github refused the broker's credentials")
)

const (
	// MaxCommentSize bounds a [Client.Comment] body, in bytes.
	MaxCommentSize = 8 << 10
	// defaultHTTPTimeout bounds each request made with the default client.
	defaultHTTPTimeout = 10 * time.Second
	// membershipWorkers bounds concurrent team membership requests.
	membershipWorkers = 8
	// teamsPerPage is the page size when listing the org's teams.
	teamsPerPage = 100
)

// issuesAPI and teamsAPI are the parts of go-github the client calls.
type issuesAPI interface {
	Get(ctx context.Context, owner, repo string, number int) (*github.Issue, *github.Response, error)
	CreateComment(ctx context.Context, owner, repo string, number int, comment *github.IssueComment) (*github.IssueComment, *github.Response, error)
}

type teamsAPI interface {
	ListTeams(ctx context.Context, org string, opts *github.ListOptions) ([]*github.Team, *github.Response, error)
	GetTeamMembershipBySlug(ctx context.Context, org, slug, user string) (*github.Membership, *github.Response, error)
}

var (
	_ issuesAPI = (*github.IssuesService)(nil)
	_ teamsAPI  = (*github.TeamsService)(nil)
)

// Option configures a [Client].
type Option func(*Client)

// WithHTTPClient sets the HTTP client whose transport, timeout and
// redirect policy the client builds on; authentication and caching are
// layered on top of its transport. It should have a Timeout; the default
// client times out after 10s.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithClock sets the clock used for the cache, app JWTs and installation
// token expiry.
func WithClock(now func() time.Time) Option {
	return func(c *Client) {
		if now != nil {
			c.now = now
		}
	}
}

// Client answers ticket and team questions from GitHub. It is safe for
// concurrent use.
type Client struct {
	cfg    Config
	hc     *http.Client
	now    func() time.Time
	issues issuesAPI
	teams  teamsAPI
}

// New validates cfg and returns a Client for it. It does not contact
// GitHub.
func New(cfg Config, opts ...Option) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Teams = slices.Clone(cfg.Teams)
	c := &Client{
		cfg: cfg,
		hc:  &http.Client{Timeout: defaultHTTPTimeout},
		now: time.Now,
	}
	for _, o := range opts {
		o(c)
	}

	origin, _ := url.Parse("https://api.github.com/")
	if cfg.BaseURL != "" {
		origin, _ = url.Parse(cfg.BaseURL) // checked by Validate
	}
	base := c.hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	newGitHub := func(rt http.RoundTripper) (*github.Client, error) {
		gh := github.NewClient(&http.Client{Transport: rt, Timeout: c.hc.Timeout, CheckRedirect: c.hc.CheckRedirect})
		if cfg.BaseURL == "" {
			return gh, nil
		}
		gh, err := gh.WithEnterpriseURLs(cfg.BaseURL, cfg.BaseURL)
		if err != nil {
			return nil, fmt.Errorf("github config: base_url: %w", err)
		}
		return gh, nil
	}

	var src tokenSource = staticToken(cfg.Token)
	if cfg.App != nil {
		key, err := parseAppKey(cfg.App.PrivateKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("github config: app.private_key_pem: %w", err)
		}
		jwts, err := newAppJWT(cfg.App.AppID, key, c.now)
		if err != nil {
			return nil, err
		}
		// Token exchanges bypass the cache: they are POSTs, and each
		// carries a fresh JWT.
		ex, err := newGitHub(&authTransport{next: base, src: jwts, scheme: "Bearer", origin: origin})
		if err != nil {
			return nil, err
		}
		src = &installationTokens{
			appID:          cfg.App.AppID,
			installationID: cfg.App.InstallationID,
			apps:           ex.Apps,
			now:            c.now,
			exchange:       make(chan struct{}, 1),
		}
	}

	// The cache sits below the auth transport so that it sees, and keys
	// by, the credential each request carries.
	cache := newCacheTransport(base, cfg.cacheTTL(), c.now)
	gh, err := newGitHub(&authTransport{next: cache, src: src, scheme: "token", origin: origin})
	if err != nil {
		return nil, err
	}
	c.issues, c.teams = gh.Issues, gh.Teams
	return c, nil
}

// Ticket is a verified incident ticket: an open GitHub issue.
type Ticket struct {
	Ref       string    `json:"ref"` // owner/repo#N as cited
	Owner     string    `json:"owner"`
	Repo      string    `json:"repo"`
	Number    int       `json:"number"`
	Title     string    `json:"title"`
	State     string    `json:"state"` // always "open"
	URL       string    `json:"url"`   // the issue's web page
	Labels    []string  `json:"labels"`
	Assignees []string  `json:"assignees"` // logins
	Author    string    `json:"author"`    // login
	CreatedAt time.Time `json:"created_at"`
}

// Ticket fetches the issue ref names (owner/repo#N, see [ParseTicketRef])
// and checks that it is an open issue, not a pull request. Labels and
// assignees are sorted and never nil. Any error means the ticket must not
// be accepted; a malformed ref is refused without a request.
func (c *Client) Ticket(ctx context.Context, ref string) (Ticket, error) {
	r, err := ParseTicketRef(ref)
	if err != nil {
		return Ticket{}, err
	}
	is, _, err := c.issues.Get(ctx, r.Owner, r.Repo, r.Number)
	if err != nil {
		if s := statusOf(err); s == http.StatusNotFound || s == http.StatusGone {
			return Ticket{}, fmt.Errorf("ticket %s: no such issue; check the owner, repository and number, and that the broker's GitHub credentials can read %s/%s: %w", r, r.Owner, r.Repo, ErrTicketNotFound)
		}
		return Ticket{}, classify(ctx, c.now, "check ticket "+r.String(), err)
	}
	// GitHub redirects a transferred issue to its new repository; the ref
	// must name where the issue is, since policy may depend on the repo.
	if moved, ok := movedTo(is, r); ok {
		return Ticket{}, fmt.Errorf("ticket %s: the issue has moved to %s; cite that ref: %w", r, moved, ErrTicketNotFound)
	}
	if is.PullRequestLinks != nil {
		return Ticket{}, fmt.Errorf("ticket %s is a pull request; cite the incident issue instead: %w", r, ErrNotAnIssue)
	}
	if st := is.GetState(); st != "open" {
		return Ticket{}, fmt.Errorf("ticket %s is %s; reopen it or cite an open incident issue: %w", r, cmp.Or(st, "in no state"), ErrTicketClosed)
	}
	t := Ticket{
		Ref:       r.String(),
		Owner:     r.Owner,
		Repo:      r.Repo,
		Number:    r.Number,
		Title:     is.GetTitle(),
		State:     is.GetState(),
		URL:       is.GetHTMLURL(),
		Labels:    []string{},
		Assignees: []string{},
		Author:    is.GetUser().GetLogin(),
		CreatedAt: is.GetCreatedAt().UTC(),
	}
	for _, l := range is.Labels {
		if n := l.GetName(); n != "" {
			t.Labels = append(t.Labels, n)
		}
	}
	for _, u := range is.Assignees {
		if n := u.GetLogin(); n != "" {
			t.Assignees = append(t.Assignees, n)
		}
	}
	slices.Sort(t.Labels)
	slices.Sort(t.Assignees)
	return t, nil
}

// movedTo reports where is lives if that is not where r points.
func movedTo(is *github.Issue, r TicketRef) (string, bool) {
	repoURL := is.GetRepositoryURL()
	owner, repo := r.Owner, r.Repo
	if i := strings.LastIndex(repoURL, "/repos/"); i >= 0 {
		if o, rp, ok := strings.Cut(repoURL[i+len("/repos/"):], "/"); ok {
			owner, repo = o, rp
		}
	}
	n := is.GetNumber()
	if n == 0 {
		n = r.Number
	}
	if strings.EqualFold(owner, r.Owner) && strings.EqualFold(repo, r.Repo) && n == r.Number {
		return "", false
	}
	return truncate(fmt.Sprintf("%s/%s#%d", owner, repo, n), 160), true
}

// Teams returns the sorted slugs of the configured org teams of which
// login is an active member; a pending invitation does not count. With
// no teams configured it checks the org's first [MaxTeams] teams. The
// result is never nil. Any error means no team may be assumed.
func (c *Client) Teams(ctx context.Context, login string) ([]string, error) {
	if !validLogin(login) {
		return nil, fmt.Errorf("team membership of %q: not a GitHub login (1-39 letters, digits or single hyphens, not starting or ending with a hyphen): %w", truncate(login, 64), ErrInvalidLogin)
	}
	slugs := c.cfg.Teams
	if len(slugs) == 0 {
		var err error
		if slugs, err = c.orgTeams(ctx); err != nil {
			return nil, err
		}
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		member   = make([]bool, len(slugs))
		next     = make(chan int)
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range min(membershipWorkers, len(slugs)) {
		wg.Go(func() {
			for i := range next {
				ok, err := c.isMember(wctx, slugs[i], login)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
					continue
				}
				member[i] = ok
			}
		})
	}
feed:
	for i := range slugs {
		select {
		case next <- i:
		case <-wctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("team membership of %s in %s: %w", login, c.cfg.Org, err)
	}

	teams := []string{}
	for i, ok := range member {
		if ok {
			teams = append(teams, slugs[i])
		}
	}
	slices.Sort(teams)
	return slices.Compact(teams), nil
}

func (c *Client) isMember(ctx context.Context, slug, login string) (bool, error) {
	m, _, err := c.teams.GetTeamMembershipBySlug(ctx, c.cfg.Org, slug, login)
	if statusOf(err) == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, classify(ctx, c.now, fmt.Sprintf("team membership of %s in %s/%s", login, c.cfg.Org, slug), err)
	}
	return m.GetState() == "active", nil
}

// orgTeams lists the slugs of the org's first MaxTeams teams.
func (c *Client) orgTeams(ctx context.Context) ([]string, error) {
	op := "list the teams of github org " + c.cfg.Org
	opts := &github.ListOptions{PerPage: teamsPerPage}
	var slugs []string
	for page := 0; page < MaxTeams/teamsPerPage && len(slugs) < MaxTeams; page++ {
		teams, resp, err := c.teams.ListTeams(ctx, c.cfg.Org, opts)
		if statusOf(err) == http.StatusNotFound {
			return nil, fmt.Errorf("%s: not found; check org, and that the broker's credentials may read its teams (members: read): %w", op, err)
		}
		if err != nil {
			return nil, classify(ctx, c.now, op, err)
		}
		for _, t := range teams {
			// A slug goes into a request path; skip anything odd rather
			// than send it.
			if s := t.GetSlug(); validSlug(s) && len(slugs) < MaxTeams {
				slugs = append(slugs, s)
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	return slugs, nil
}

// Comment posts body as a comment on the issue ref names when
// [Config.Comment] is set; otherwise it does nothing and returns nil.
// The body must be valid UTF-8 of at most [MaxCommentSize] bytes.
func (c *Client) Comment(ctx context.Context, ref TicketRef, body string) error {
	if !c.cfg.Comment {
		return nil
	}
	if err := ref.validate(); err != nil {
		return err
	}
	op := "comment on ticket " + ref.String()
	switch {
	case strings.TrimSpace(body) == "":
		return fmt.Errorf("%s: the comment is empty; write what was granted", op)
	case len(body) > MaxCommentSize:
		return fmt.Errorf("%s: the comment is %d bytes, over %d; shorten it", op, len(body), MaxCommentSize)
	case !utf8.ValidString(body):
		return fmt.Errorf("%s: the comment is not valid UTF-8", op)
	}
	_, _, err := c.issues.CreateComment(ctx, ref.Owner, ref.Repo, ref.Number, &github.IssueComment{Body: &body})
	if s := statusOf(err); s == http.StatusNotFound || s == http.StatusGone {
		return fmt.Errorf("%s: no such issue, or the broker's credentials cannot see it: %w", op, ErrTicketNotFound)
	}
	if err != nil {
		return classify(ctx, c.now, op, err)
	}
	return nil
}

// statusOf returns the HTTP status of a go-github API error, or 0. An
// error already classified, such as the installation token exchange's,
// has no status here: a 404 from the exchange must not read as a
// missing issue.
func statusOf(err error) int {
	var er *github.ErrorResponse
	if err != nil && !classified(err) && errors.As(err, &er) && er.Response != nil {
		return er.Response.StatusCode
	}
	return 0
}

// classified reports whether err already wraps a transport-level
// sentinel (from the installation token exchange).
func classified(err error) bool {
	return errors.Is(err, ErrRateLimited) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnauthorized)
}

// classify turns a go-github error into one wrapping a sentinel, saying
// what op failed and what to do.
func classify(ctx context.Context, now func() time.Time, op string, err error) error {
	var (
		rl    *github.RateLimitError
		abuse *github.AbuseRateLimitError
		tfa   *github.TwoFactorAuthError
		er    *github.ErrorResponse
		acc   *github.AcceptedError
	)
	switch {
	case classified(err):
		return fmt.Errorf("%s: %w", op, err)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", op, ctx.Err())
	case errors.As(err, &rl):
		when := "later"
		if !rl.Rate.Reset.IsZero() {
			when = "after " + rl.Rate.Reset.UTC().Format(time.RFC3339)
		}
		return fmt.Errorf("%s: github API rate limit exhausted, retry %s: %w: %w", op, when, ErrRateLimited, err)
	case errors.As(err, &abuse):
		when := "in a few minutes"
		if d := abuse.GetRetryAfter(); d > 0 {
			when = fmt.Sprintf("after %s (in %s)", now().Add(d).UTC().Format(time.RFC3339), d)
		}
		return fmt.Errorf("%s: github secondary rate limit hit, retry %s: %w: %w", op, when, ErrRateLimited, err)
	case errors.As(err, &tfa):
		return fmt.Errorf("%s: github wants a one-time password; use a token or GitHub App instead of a password: %w: %w", op, ErrUnauthorized, err)
	case errors.As(err, &acc):
		return fmt.Errorf("%s: github is still preparing the answer; try again shortly: %w: %w", op, ErrUnavailable, err)
	case errors.As(err, &er) && er.Response != nil:
		switch s := er.Response.StatusCode; {
		case s == http.StatusUnauthorized:
			return fmt.Errorf("%s: github rejected the credentials (401); check the token, or the app's ID, installation ID and private key: %w: %w", op, ErrUnauthorized, err)
		case s == http.StatusForbidden:
			return fmt.Errorf("%s: github denied access (403); give the token or app read access to issues and org members (and write access to issues for comments): %w: %w", op, ErrUnauthorized, err)
		case s >= 500:
			return fmt.Errorf("%s: github failed (%d); try again later: %w: %w", op, s, ErrUnavailable, err)
		default:
			return fmt.Errorf("%s: %w", op, err)
		}
	default:
		return fmt.Errorf("%s: cannot reach github or read its answer; try again later: %w: %w", op, ErrUnavailable, err)
	}
}
