package devidp

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func validOptions() Options {
	return Options{
		BaseURL: "http://127.0.0.1:8080/dev/idp",
		Issuers: []IssuerSpec{{
			Name:      "vendor",
			ClientIDs: []string{"tether-cli"},
			Users:     []User{{Email: "ada@vendor.test"}, {Email: "bob@vendor.test"}},
		}},
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(o *Options)
		wantErr string // substring; empty means valid
	}{
		{"valid", func(o *Options) {}, ""},
		{"trailing slash", func(o *Options) { o.BaseURL += "/" }, ""},
		{"no path", func(o *Options) { o.BaseURL = "http://127.0.0.1:8080" }, ""},
		{"https", func(o *Options) { o.BaseURL = "https://dev.tether.test/idp" }, ""},
		{"empty base", func(o *Options) { o.BaseURL = "" }, "base_url: empty"},
		{"relative base", func(o *Options) { o.BaseURL = "/dev/idp" }, "scheme"},
		{"ftp base", func(o *Options) { o.BaseURL = "ftp://127.0.0.1/x" }, `scheme "ftp"`},
		{"query in base", func(o *Options) { o.BaseURL += "?a=b" }, "query"},
		{"pattern chars in base", func(o *Options) { o.BaseURL = "http://127.0.0.1/{x}" }, "path may hold only"},
		{"unclean base", func(o *Options) { o.BaseURL = "http://127.0.0.1/a//b" }, "not clean"},
		{"no issuers", func(o *Options) { o.Issuers = nil }, "no issuers"},
		{"bad name", func(o *Options) { o.Issuers[0].Name = "Vendor" }, "not a lowercase DNS label"},
		{"slash in name", func(o *Options) { o.Issuers[0].Name = "a/b" }, "not a lowercase DNS label"},
		{"dash name", func(o *Options) { o.Issuers[0].Name = "-a" }, "not a lowercase DNS label"},
		{"duplicate name", func(o *Options) { o.Issuers = append(o.Issuers, o.Issuers[0]) }, "already used by issuers[0]"},
		{"no clients", func(o *Options) { o.Issuers[0].ClientIDs = nil }, "no client_ids"},
		{"empty client", func(o *Options) { o.Issuers[0].ClientIDs = []string{""} }, "client_ids[0] is empty"},
		{"duplicate client", func(o *Options) { o.Issuers[0].ClientIDs = []string{"a", "a"} }, "listed twice"},
		{"no users", func(o *Options) { o.Issuers[0].Users = nil }, "no users"},
		{"bad email", func(o *Options) { o.Issuers[0].Users[0].Email = "ada" }, "not an address"},
		{"spaced email", func(o *Options) { o.Issuers[0].Users[0].Email = "a da@x.test" }, "not an address"},
		{"duplicate email", func(o *Options) { o.Issuers[0].Users[1].Email = "ada@vendor.test" }, "already used by users[0]"},
		{"duplicate subject", func(o *Options) { o.Issuers[0].Users[1].Subject = "dev|ada@vendor.test" }, "subject"},
		{"reserved claim", func(o *Options) { o.Issuers[0].Users[0].Claims = map[string]any{"iss": "x"} }, `claims["iss"] is set by the issuer`},
		{"non-json claim", func(o *Options) { o.Issuers[0].Users[0].Claims = map[string]any{"f": func() {}} }, "not JSON"},
		{"negative ttl", func(o *Options) { o.IDTokenTTL = -time.Second }, "negative"},
		{"fractional interval", func(o *Options) { o.DeviceInterval = 1500 * time.Millisecond }, "whole"},
		{"relative redirect", func(o *Options) { o.RedirectURIs = []string{"/cb"} }, "not an absolute URI"},
		{"redirect fragment", func(o *Options) { o.RedirectURIs = []string{"https://x.test/cb#f"} }, "fragment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := validOptions()
			tt.edit(&o)
			err := o.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate(%s) = %v, want nil", tt.name, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate(%s) = %v, want error containing %q", tt.name, err, tt.wantErr)
			}
			if _, nerr := New(o); (nerr == nil) != (err == nil) {
				t.Errorf("New(%s) = %v, want same outcome as Validate (%v)", tt.name, nerr, err)
			}
		})
	}
}

func TestIssuerURLTrailingSlash(t *testing.T) {
	o := validOptions()
	o.BaseURL = "http://127.0.0.1:8080/dev/idp/"
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.IssuerURL("vendor"), "http://127.0.0.1:8080/dev/idp/vendor"; got != want {
		t.Errorf("IssuerURL(vendor) = %q, want %q", got, want)
	}
}

func TestIsLoopbackRedirect(t *testing.T) {
	tests := []struct {
		uri  string
		want bool
	}{
		{"http://127.0.0.1/cb", true},
		{"http://127.0.0.1:1/cb", true},
		{"http://127.0.0.1:65535", true},
		{"http://[::1]:8080/cb", true},
		{"http://localhost:8080/cb?x=1", true},
		{"http://127.0.0.1:0/cb", false},
		{"http://127.0.0.1:65536/cb", false},
		{"http://127.0.0.1:/cb", false},
		{"http://127.0.0.2/cb", false},
		{"http://127.0.0.1.evil.test/cb", false},
		{"http://localhost.evil.test/cb", false},
		{"http://evil.test/127.0.0.1", false},
		{"http://x@127.0.0.1/cb", false},
		{"http://127.0.0.1/cb#frag", false},
		{"http://127.0.0.1/cb#", false},
		{"https://127.0.0.1/cb", false},
		{"http://[::1%25lo]:80/cb", false},
		{"HTTP://127.0.0.1/cb", true},
		{"http:127.0.0.1", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := isLoopbackRedirect(tt.uri); got != tt.want {
			t.Errorf("isLoopbackRedirect(%q) = %v, want %v", tt.uri, got, tt.want)
		}
	}
}

func TestUserCodes(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		uc := newUserCode()
		if normalizeUserCode(uc) != uc || normalizeUserCode(formatUserCode(uc)) != uc {
			t.Fatalf("normalizeUserCode(%q) = %q, want it unchanged", uc, normalizeUserCode(uc))
		}
		seen[uc] = true
	}
	if len(seen) < 199 {
		t.Errorf("200 user codes hold %d distinct ones", len(seen))
	}
	for _, tt := range []struct{ in, want string }{
		{"bcdf-ghjk", "BCDFGHJK"},
		{" BCDF GHJK ", "BCDFGHJK"},
		{"BCDFGHJK", "BCDFGHJK"},
		{"BCDF-GHJA", ""}, // A is not in the alphabet
		{"BCDF-GHJ", ""},
		{"BCDF-GHJKL", ""},
		{"ſCDF-GHJK", ""}, // ſ upper-cases to S outside ASCII
		{"", ""},
	} {
		if got := normalizeUserCode(tt.in); got != tt.want {
			t.Errorf("normalizeUserCode(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzNormalizeUserCode(f *testing.F) {
	for _, s := range []string{"BCDF-GHJK", "bcdfghjk", "x", "", "ſCDF-GHJK", "BCDF--GHJK"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		uc := normalizeUserCode(s)
		if uc == "" {
			return
		}
		if len(uc) != 8 || strings.Trim(uc, userCodeAlphabet) != "" {
			t.Fatalf("normalizeUserCode(%q) = %q, want 8 letters of %s", s, uc, userCodeAlphabet)
		}
		if normalizeUserCode(formatUserCode(uc)) != uc {
			t.Fatalf("normalizeUserCode(formatUserCode(%q)) != %q", uc, uc)
		}
	})
}

// FuzzAuthorize sends arbitrary queries to /authorize: it must never
// fail with a 5xx nor redirect anywhere but to an allowed redirect_uri.
func FuzzAuthorize(f *testing.F) {
	o := validOptions()
	o.RedirectURIs = []string{"https://broker.dev.test/cb"}
	p, err := New(o)
	if err != nil {
		f.Fatal(err)
	}
	h := p.Handler()
	valid := url.Values{"client_id": {"tether-cli"}, "redirect_uri": {"http://127.0.0.1:9/cb"}, "response_type": {"code"},
		"scope": {"openid"}, "state": {"s"}, "code_challenge": {strings.Repeat("a", 43)}, "code_challenge_method": {"S256"},
		"login_hint": {"ada@vendor.test"}}
	f.Add(valid.Encode())
	f.Add("client_id=tether-cli&redirect_uri=https%3A%2F%2Fevil.test%2Fcb&response_type=code")
	f.Add("client_id=tether-cli&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb&state=%ff")
	f.Add("client_id=tether-cli&redirect_uri=https://broker.dev.test/cb&scope=x")
	f.Add("%zz")
	f.Fuzz(func(t *testing.T, rawQuery string) {
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/dev/idp/vendor/authorize", nil)
		req.URL.RawQuery = rawQuery
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("GET /authorize?%s = %d", rawQuery, rec.Code)
		}
		loc := rec.Header().Get("Location")
		if loc == "" {
			return
		}
		q, err := url.ParseQuery(rawQuery)
		if err != nil || len(q["redirect_uri"]) != 1 {
			t.Fatalf("GET /authorize?%s redirected to %q without one valid redirect_uri", rawQuery, loc)
		}
		ru := q.Get("redirect_uri")
		if !isLoopbackRedirect(ru) && ru != "https://broker.dev.test/cb" {
			t.Fatalf("GET /authorize?%s redirected to %q: redirect_uri %q is not allowed", rawQuery, loc, ru)
		}
		lu, err := url.Parse(loc)
		ruu, _ := url.Parse(ru)
		if err != nil || lu.Scheme != strings.ToLower(ruu.Scheme) || lu.Host != ruu.Host || lu.Path != ruu.Path {
			t.Fatalf("GET /authorize?%s redirected to %q, not to redirect_uri %q", rawQuery, loc, ru)
		}
	})
}

func TestTable(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := newTable[int](time.Minute)
	tb.max = 3
	for i := range 4 {
		tb.put(now, string(rune('a'+i)), i)
	}
	if _, ok := tb.get(now, "a"); ok || tb.len() != 3 {
		t.Errorf("after 4 puts into a table of 3: a present %v, len %d; want the oldest dropped, len 3", ok, tb.len())
	}
	if v, ok := tb.take(now, "b"); !ok || v != 1 {
		t.Errorf("take(b) = %d, %v; want 1, true", v, ok)
	}
	if _, ok := tb.get(now, "b"); ok {
		t.Error("b present after take")
	}
	if _, ok := tb.get(now.Add(59*time.Second), "c"); !ok {
		t.Error("c expired before its time")
	}
	if _, ok := tb.get(now.Add(time.Minute), "c"); ok || tb.len() != 0 {
		t.Errorf("after a minute: c present %v, len %d; want everything expired", ok, tb.len())
	}
}

func TestBounds(t *testing.T) {
	p, err := New(validOptions())
	if err != nil {
		t.Fatal(err)
	}
	h := p.Handler()
	tests := []struct {
		name, method, path, body string
		wantStatus               int
	}{
		{"huge query", "GET", "/dev/idp/vendor/authorize?x=" + strings.Repeat("a", maxQueryBytes), "", 400},
		{"huge token form", "POST", "/dev/idp/vendor/token", "client_id=tether-cli&x=" + strings.Repeat("a", maxFormBytes), 400},
		{"huge param", "POST", "/dev/idp/vendor/token", "client_id=tether-cli&grant_type=refresh_token&refresh_token=" + strings.Repeat("a", maxParamBytes+1), 400},
		{"wrong method", "PUT", "/dev/idp/vendor/token", "", 405},
		{"unknown issuer", "GET", "/dev/idp/nope/jwks", "", 404},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, "http://127.0.0.1:8080"+tt.path, strings.NewReader(tt.body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.wantStatus {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path[:min(len(tt.path), 40)], rec.Code, rec.Body.String()[:min(rec.Body.Len(), 200)], tt.wantStatus)
		}
	}
}
