// Package ghubtest is an in-process fake of the GitHub REST API paths
// package ghub calls, for tests: issues and pull requests, issue
// comments, org teams and team memberships, and GitHub App installation
// tokens. It answers with ETags and 304s like GitHub, can be made
// rate-limited, secondary-rate-limited or down, and records every request
// it receives. It is test-only: production code must not import it.
package ghubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// APIPath is the path prefix the fake serves the API under, as GitHub
// Enterprise Server does; [Server.URL] includes it.
const APIPath = "/api/v3/"

// SecondaryRateLimitDocs is the documentation_url GitHub sends with a
// secondary (abuse) rate limit error, which go-github recognises.
const SecondaryRateLimitDocs = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"

// DefaultTokenLifetime is how long an installation token lasts, as on
// GitHub.
const DefaultTokenLifetime = time.Hour

// Issue is an issue or pull request held by the fake.
type Issue struct {
	Owner, Repo string
	Number      int
	Title       string
	Labels      []string
	Assignees   []string
	Author      string // login
	Closed      bool
	PullRequest bool
	CreatedAt   time.Time
}

// Ref returns the issue's owner/repo#N.
func (is Issue) Ref() string { return fmt.Sprintf("%s/%s#%d", is.Owner, is.Repo, is.Number) }

// Request is a request the fake received.
type Request struct {
	Method string
	Path   string // without APIPath, e.g. /repos/acme/ops/issues/1
	Query  string
	Header http.Header
	Status int // the status the fake answered, such as 200 or 304
}

// Comment is an issue comment posted to the fake.
type Comment struct {
	Ref           string // owner/repo#N
	Body          string
	Authorization string // the header it was posted with
}

// Server is a fake GitHub API. Its methods are safe for concurrent use.
type Server struct {
	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	now      func() time.Time
	tokens   map[string]time.Time // accepted tokens; zero time never expires
	app      *appInstall
	lifetime time.Duration
	issued   int
	issues   map[string]*Issue  // by lowercased ref
	moved    map[string]string  // lowercased old ref → new ref
	teams    map[string][]*team // by lowercased org, in creation order
	fail     func(w http.ResponseWriter)
	requests []Request
	comments []Comment
}

type appInstall struct {
	appID, installationID int64
	key                   *rsa.PublicKey
}

type team struct {
	id      int
	slug    string
	members map[string]string // lowercased login → "active" or "pending"
}

// NewServer starts a fake GitHub API that accepts no credentials until
// [Server.AddToken] or [Server.SetApp]; it is closed by t.Cleanup.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		t:        t,
		now:      time.Now,
		tokens:   map[string]time.Time{},
		lifetime: DefaultTokenLifetime,
		issues:   map[string]*Issue{},
		moved:    map[string]string{},
		teams:    map[string][]*team{},
	}
	api := http.NewServeMux()
	api.HandleFunc("GET /repos/{owner}/{repo}/issues/{number}", s.getIssue)
	api.HandleFunc("POST /repos/{owner}/{repo}/issues/{number}/comments", s.postComment)
	api.HandleFunc("GET /orgs/{org}/teams", s.listTeams)
	api.HandleFunc("GET /orgs/{org}/teams/{slug}/memberships/{user}", s.getMembership)
	api.HandleFunc("POST /app/installations/{id}/access_tokens", s.createToken)
	api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "Not Found")
	})
	mux := http.NewServeMux()
	mux.Handle(APIPath, http.StripPrefix(strings.TrimSuffix(APIPath, "/"), s.middleware(api)))
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// URL returns the API base URL, http://127.0.0.1:port/api/v3/, for
// ghub.Config.BaseURL.
func (s *Server) URL() string { return s.srv.URL + APIPath }

// Close shuts the server down; later requests are refused at connect.
// It may be called more than once.
func (s *Server) Close() { s.srv.Close() }

// SetClock sets the clock for app JWT validation and installation token
// expiry; the default is time.Now.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// AddToken makes the fake accept tok, sent as "token tok" or "Bearer tok".
func (s *Server) AddToken(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[tok] = time.Time{}
}

// SetApp makes the fake issue installation tokens for installationID of
// app appID, to JWTs signed RS256 with the private half of key.
func (s *Server) SetApp(appID, installationID int64, key *rsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.app = &appInstall{appID: appID, installationID: installationID, key: key}
}

// SetTokenLifetime sets how long installation tokens issued from now on
// last; the default is [DefaultTokenLifetime].
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = d
}

// InstallationTokens returns how many installation tokens were issued.
func (s *Server) InstallationTokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// NewAppKey generates an RSA key for a fake GitHub App and returns it as
// the PKCS #1 PEM GitHub hands out, with its public half for [Server.SetApp].
func NewAppKey(t testing.TB) (privatePEM string, pub *rsa.PublicKey) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate app key: %v", err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	return string(b), &k.PublicKey
}

// AddIssue adds or replaces an issue or pull request.
func (s *Server) AddIssue(is Issue) {
	s.t.Helper()
	if is.Owner == "" || is.Repo == "" || is.Number <= 0 {
		s.t.Fatalf("ghubtest: AddIssue(%+v): set Owner, Repo and a positive Number", is)
	}
	if is.CreatedAt.IsZero() {
		is.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	is.Labels = slices.Clone(is.Labels)
	is.Assignees = slices.Clone(is.Assignees)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issues[strings.ToLower(is.Ref())] = &is
}

// UpdateIssue changes the issue ref (owner/repo#N) in place; its ETag
// changes with its content.
func (s *Server) UpdateIssue(ref string, f func(*Issue)) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	is, ok := s.issues[strings.ToLower(ref)]
	if !ok {
		s.t.Fatalf("ghubtest: UpdateIssue(%q): no such issue", ref)
	}
	f(is)
}

// CloseIssue closes the issue ref (owner/repo#N).
func (s *Server) CloseIssue(ref string) {
	s.t.Helper()
	s.UpdateIssue(ref, func(is *Issue) { is.Closed = true })
}

// TransferIssue moves the issue from (owner/repo#N) to the repository
// and number of to, as GitHub does when an issue is transferred: a GET
// of the old path is redirected to the new one.
func (s *Server) TransferIssue(from, toOwner, toRepo string, toNumber int) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(from)
	is, ok := s.issues[key]
	if !ok {
		s.t.Fatalf("ghubtest: TransferIssue(%q): no such issue", from)
	}
	delete(s.issues, key)
	is.Owner, is.Repo, is.Number = toOwner, toRepo, toNumber
	s.issues[strings.ToLower(is.Ref())] = is
	s.moved[key] = is.Ref()
}

// AddTeam adds a team with no members to org.
func (s *Server) AddTeam(org, slug string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.teamLocked(org, slug)
}

func (s *Server) teamLocked(org, slug string) *team {
	key := strings.ToLower(org)
	for _, tm := range s.teams[key] {
		if tm.slug == slug {
			return tm
		}
	}
	tm := &team{id: 1000 + len(s.teams[key]), slug: slug, members: map[string]string{}}
	s.teams[key] = append(s.teams[key], tm)
	return tm
}

// AddMember makes login an active member of the team, adding the team
// if needed.
func (s *Server) AddMember(org, slug, login string) { s.setMember(org, slug, login, "active") }

// AddPendingMember invites login to the team: GitHub reports the
// membership with state "pending" until the invitation is accepted.
func (s *Server) AddPendingMember(org, slug, login string) {
	s.setMember(org, slug, login, "pending")
}

func (s *Server) setMember(org, slug, login, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.teamLocked(org, slug).members[strings.ToLower(login)] = state
}

// RateLimit makes every request fail as GitHub does when the primary
// rate limit is spent: 403 with X-RateLimit-Remaining: 0 and
// X-RateLimit-Reset set to reset.
func (s *Server) RateLimit(reset time.Time) {
	s.setFail(func(w http.ResponseWriter) {
		h := w.Header()
		h.Set("X-RateLimit-Limit", "5000")
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Used", "5000")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
		writeJSON(w, http.StatusForbidden, map[string]string{
			"message":           "API rate limit exceeded for installation ID 1.",
			"documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-primary-rate-limits",
		})
	})
}

// AbuseLimit makes every request fail as GitHub does on a secondary rate
// limit: 403 with Retry-After and the documented message.
func (s *Server) AbuseLimit(retryAfter time.Duration) {
	s.setFail(func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
		writeJSON(w, http.StatusForbidden, map[string]string{
			"message":           "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
			"documentation_url": SecondaryRateLimitDocs,
		})
	})
}

// Fail makes every request answer status (such as 500 or 502) with a
// GitHub-style error body.
func (s *Server) Fail(status int) {
	s.setFail(func(w http.ResponseWriter) { writeError(w, status, http.StatusText(status)) })
}

// Recover undoes [Server.RateLimit], [Server.AbuseLimit] and [Server.Fail].
func (s *Server) Recover() { s.setFail(nil) }

func (s *Server) setFail(f func(http.ResponseWriter)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = f
}

// Requests returns the requests received so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		r.Header = r.Header.Clone()
		out[i] = r
	}
	return out
}

// Count returns how many requests with method and path (without
// APIPath) were received.
func (s *Server) Count(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

// Last returns the last request with method and path, and whether there
// was one.
func (s *Server) Last(method, path string) (Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.requests) - 1; i >= 0; i-- {
		if r := s.requests[i]; r.Method == method && r.Path == path {
			r.Header = r.Header.Clone()
			return r, true
		}
	}
	return Request{}, false
}

// Comments returns the comments posted so far, oldest first.
func (s *Server) Comments() []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.comments)
}

// middleware records the request, then applies a failure mode, then
// checks the credentials (the token endpoint checks its own).
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		i := len(s.requests)
		s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone()})
		fail, now := s.fail, s.now()
		s.mu.Unlock()
		// The status is recorded before it is sent, so a test sees it as
		// soon as its client has the response.
		w = &statusWriter{ResponseWriter: w, record: func(status int) {
			s.mu.Lock()
			s.requests[i].Status = status
			s.mu.Unlock()
		}}
		if fail != nil {
			fail(w)
			return
		}
		h := w.Header()
		h.Set("X-RateLimit-Limit", "5000")
		h.Set("X-RateLimit-Remaining", "4999")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(now.Add(time.Hour).Unix(), 10))
		if !strings.HasPrefix(r.URL.Path, "/app/") && !s.authorized(r) {
			writeError(w, http.StatusUnauthorized, "Bad credentials")
			return
		}
		next.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	record func(status int)
	wrote  bool
}

func (w *statusWriter) WriteHeader(status int) {
	if !w.wrote {
		w.wrote = true
		w.record(status)
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || (!strings.EqualFold(scheme, "token") && !strings.EqualFold(scheme, "Bearer")) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[tok]
	return ok && (exp.IsZero() || s.now().Before(exp))
}

func (s *Server) baseURL(r *http.Request) string { return "http://" + r.Host + APIPath }

func (s *Server) getIssue(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("owner") + "/" + r.PathValue("repo") + "#" + r.PathValue("number")
	s.mu.Lock()
	is, ok := s.issues[strings.ToLower(ref)]
	var doc map[string]any
	if ok {
		doc = issueJSON(is, s.baseURL(r))
	}
	moved, wasMoved := s.moved[strings.ToLower(ref)]
	s.mu.Unlock()
	switch {
	case ok:
		writeCacheable(w, r, doc)
	case wasMoved:
		owner, rest, _ := strings.Cut(moved, "/")
		repo, num, _ := strings.Cut(rest, "#")
		http.Redirect(w, r, s.baseURL(r)+"repos/"+owner+"/"+repo+"/issues/"+num, http.StatusMovedPermanently)
	default:
		writeError(w, http.StatusNotFound, "Not Found")
	}
}

func issueJSON(is *Issue, base string) map[string]any {
	repoAPI := base + "repos/" + is.Owner + "/" + is.Repo
	web := "https://github.example/" + is.Owner + "/" + is.Repo
	doc := map[string]any{
		"id":             is.Number * 7,
		"number":         is.Number,
		"title":          is.Title,
		"state":          "open",
		"url":            fmt.Sprintf("%s/issues/%d", repoAPI, is.Number),
		"repository_url": repoAPI,
		"html_url":       fmt.Sprintf("%s/issues/%d", web, is.Number),
		"user":           map[string]any{"login": is.Author},
		"created_at":     is.CreatedAt.UTC().Format(time.RFC3339),
	}
	if is.Closed {
		doc["state"] = "closed"
	}
	labels := []map[string]any{}
	for _, l := range is.Labels {
		labels = append(labels, map[string]any{"name": l})
	}
	doc["labels"] = labels
	assignees := []map[string]any{}
	for _, a := range is.Assignees {
		assignees = append(assignees, map[string]any{"login": a})
	}
	doc["assignees"] = assignees
	if is.PullRequest {
		doc["html_url"] = fmt.Sprintf("%s/pull/%d", web, is.Number)
		doc["pull_request"] = map[string]any{
			"url":      fmt.Sprintf("%s/pulls/%d", repoAPI, is.Number),
			"html_url": doc["html_url"],
		}
	}
	return doc
}

func (s *Server) postComment(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("owner") + "/" + r.PathValue("repo") + "#" + r.PathValue("number")
	var in struct {
		Body string `json:"body"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil || in.Body == "" {
		writeError(w, http.StatusUnprocessableEntity, "Invalid request: body is missing")
		return
	}
	s.mu.Lock()
	is, ok := s.issues[strings.ToLower(ref)]
	if ok {
		s.comments = append(s.comments, Comment{Ref: is.Ref(), Body: in.Body, Authorization: r.Header.Get("Authorization")})
	}
	n := len(s.comments)
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": n, "body": in.Body})
}

func (s *Server) listTeams(w http.ResponseWriter, r *http.Request) {
	org := r.PathValue("org")
	perPage, page := 30, 1
	if v, err := strconv.Atoi(r.URL.Query().Get("per_page")); err == nil && v > 0 {
		perPage = min(v, 100)
	}
	if v, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && v > 0 {
		page = v
	}
	s.mu.Lock()
	teams, ok := s.teams[strings.ToLower(org)]
	var docs []map[string]any
	for i := (page - 1) * perPage; ok && i < len(teams) && i < page*perPage; i++ {
		docs = append(docs, map[string]any{"id": teams[i].id, "slug": teams[i].slug, "name": teams[i].slug})
	}
	more := page*perPage < len(teams)
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	if docs == nil {
		docs = []map[string]any{}
	}
	if more {
		next := fmt.Sprintf("%sorgs/%s/teams?page=%d&per_page=%d", s.baseURL(r), org, page+1, perPage)
		w.Header().Set("Link", `<`+next+`>; rel="next"`)
	}
	writeCacheable(w, r, docs)
}

func (s *Server) getMembership(w http.ResponseWriter, r *http.Request) {
	org, slug, user := r.PathValue("org"), r.PathValue("slug"), r.PathValue("user")
	s.mu.Lock()
	state := ""
	for _, tm := range s.teams[strings.ToLower(org)] {
		if tm.slug == slug {
			state = tm.members[strings.ToLower(user)]
		}
	}
	s.mu.Unlock()
	if state == "" {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeCacheable(w, r, map[string]any{
		"url":   fmt.Sprintf("%sorgs/%s/teams/%s/memberships/%s", s.baseURL(r), org, slug, user),
		"role":  "member",
		"state": state,
	})
}

// createToken checks the app JWT as GitHub does (RS256 with the app's
// key, iss the app ID, iat not in the future, exp in the future and at
// most 10 minutes after iat) and issues an installation token.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	app, now, lifetime := s.app, s.now(), s.lifetime
	s.mu.Unlock()
	if app == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	scheme, raw, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		writeError(w, http.StatusUnauthorized, "A JSON web token could not be decoded")
		return
	}
	if msg := checkAppJWT(raw, app, now); msg != "" {
		writeError(w, http.StatusUnauthorized, msg)
		return
	}
	if r.PathValue("id") != strconv.FormatInt(app.installationID, 10) {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	s.mu.Lock()
	s.issued++
	tok := fmt.Sprintf("ghs_fake%04d", s.issued)
	exp := now.Add(lifetime)
	s.tokens[tok] = exp
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"token":      tok,
		"expires_at": exp.UTC().Format(time.RFC3339),
	})
}

// checkAppJWT returns why raw is not a valid app JWT at now, or "".
func checkAppJWT(raw string, app *appInstall, now time.Time) string {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return "A JSON web token could not be decoded"
	}
	var c jwt.Claims
	if err := tok.Claims(app.key, &c); err != nil {
		return "A JSON web token could not be decoded"
	}
	switch {
	case c.Issuer != strconv.FormatInt(app.appID, 10):
		return "'Issuer' claim ('iss') must be an Integer"
	case c.IssuedAt == nil || c.IssuedAt.Time().After(now):
		return "'Issued at' claim ('iat') must be an Integer representing a time in the past"
	case c.Expiry == nil || !c.Expiry.Time().After(now):
		return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
	case c.Expiry.Time().Sub(c.IssuedAt.Time()) > 10*time.Minute:
		return "'Expiration time' claim ('exp') is too far in the future"
	}
	return ""
}

// writeCacheable writes v with an ETag derived from its content, or a
// bare 304 when If-None-Match already holds that ETag.
func writeCacheable(w http.ResponseWriter, r *http.Request, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	sum := sha256.Sum256(b)
	etag := `W/"` + hex.EncodeToString(sum[:16]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "private, max-age=60, s-maxage=60")
	if etagMatch(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(b)
}

// etagMatch applies If-None-Match's weak comparison.
func etagMatch(header, etag string) bool {
	for c := range strings.SplitSeq(header, ",") {
		c = strings.TrimSpace(c)
		if c == "*" || strings.TrimPrefix(c, "W/") == strings.TrimPrefix(etag, "W/") {
			return true
		}
	}
	return false
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{
		"message":           msg,
		"documentation_url": "https://docs.github.com/rest",
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
