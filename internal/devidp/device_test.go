package devidp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

var userCodeRE = regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`)

// TestDeviceFlow runs the device flow as the CLI will: DeviceAuth, a dev
// user approving on the /device page once the device is polling, and
// DeviceAccessToken returning a token go-oidc verifies.
func TestDeviceFlow(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	ctx := f.ctx()
	p := f.provider("vendor")
	conf := oauthConfig(p, cliClient)
	verifier := oauth2.GenerateVerifier()
	da, err := conf.DeviceAuth(ctx, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "dev-nonce"))
	if err != nil {
		t.Fatalf("DeviceAuth() = %v", err)
	}
	iss := f.idp.IssuerURL("vendor")
	if !userCodeRE.MatchString(da.UserCode) || da.VerificationURI != iss+"/device" || da.Interval != 1 ||
		da.VerificationURIComplete != iss+"/device?user_code="+da.UserCode {
		t.Errorf("DeviceAuth() = %+v, want an XXXX-XXXX user code, verification URIs under %s and interval 1", da, iss)
	}
	if d := time.Until(da.Expiry); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("device code expires in %v, want about 10m", d)
	}

	// Approve once the device has polled at least once, so the flow sees
	// authorization_pending first.
	approved := make(chan error, 1)
	var once sync.Once
	hook := func(r *http.Request) {
		if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code" {
			return
		}
		once.Do(func() {
			go func() {
				// Typed as a person might: lower case, no dash.
				typed := strings.ToLower(strings.ReplaceAll(da.UserCode, "-", ""))
				resp, body := f.postForm(iss+"/device", url.Values{"user_code": {typed}, "email": {"ada@vendor.test"},
					"action": {"approve"}}, http.Header{"Accept": {"application/json"}})
				if resp.StatusCode != http.StatusOK || strings.TrimSpace(body) != `{"status":"approved"}` {
					approved <- &unexpected{resp.StatusCode, body}
					return
				}
				approved <- nil
			}()
		})
	}
	f.after.Store(&hook)

	tok, err := conf.DeviceAccessToken(ctx, da, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("DeviceAccessToken() = %v", err)
	}
	if err := <-approved; err != nil {
		t.Fatalf("approve: %v", err)
	}
	idt, err := f.verifier(p, cliClient).Verify(ctx, tok.Extra("id_token").(string))
	if err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	if c := claimsOf(t, idt); c["email"] != "ada@vendor.test" || idt.Nonce != "dev-nonce" {
		t.Errorf("device id token email %v nonce %q, want ada@vendor.test and dev-nonce", c["email"], idt.Nonce)
	}
	if tok.RefreshToken == "" {
		t.Error("device flow returned no refresh token")
	}
}

type unexpected struct {
	status int
	body   string
}

func (u *unexpected) Error() string {
	return "unexpected response " + http.StatusText(u.status) + ": " + u.body
}

// deviceAuth starts a device request on the fixture's vendor issuer.
func (f *fixture) deviceAuth(form url.Values) (deviceCode, userCode string) {
	f.t.Helper()
	if form == nil {
		form = url.Values{"client_id": {cliClient}, "scope": {"openid email"}}
	}
	resp, body := f.postForm(f.idp.IssuerURL("vendor")+"/device/code", form, nil)
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("POST /device/code = %d %s", resp.StatusCode, body)
	}
	var da struct {
		DeviceCode string `json:"device_code"`
		UserCode   string `json:"user_code"`
		ExpiresIn  int    `json:"expires_in"`
		Interval   int    `json:"interval"`
	}
	if err := json.Unmarshal([]byte(body), &da); err != nil {
		f.t.Fatal(err)
	}
	if da.ExpiresIn != 600 || da.Interval != 1 {
		f.t.Errorf("device response expires_in %d interval %d, want 600 and 1", da.ExpiresIn, da.Interval)
	}
	return da.DeviceCode, da.UserCode
}

// poll polls once for deviceCode and returns the status and error code
// ("" on success).
func (f *fixture) poll(clientID, deviceCode string, extra url.Values) (int, string) {
	f.t.Helper()
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "client_id": {clientID}, "device_code": {deviceCode}}
	for k, v := range extra {
		form[k] = v
	}
	resp, body := f.postForm(f.idp.IssuerURL("vendor")+"/token", form, nil)
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	return resp.StatusCode, oauthErr(f.t, body)
}

// decide approves or denies userCode as email, asking for JSON.
func (f *fixture) decide(userCode, email, action string) (int, string) {
	f.t.Helper()
	resp, body := f.postForm(f.idp.IssuerURL("vendor")+"/device",
		url.Values{"user_code": {userCode}, "email": {email}, "action": {action}},
		http.Header{"Accept": {"application/json"}})
	return resp.StatusCode, strings.TrimSpace(body)
}

func TestDevicePolling(t *testing.T) {
	f := newFixture(t, true, nil)
	type step struct {
		advance    time.Duration
		decide     string // approve or deny before polling
		wantStatus int
		wantCode   string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"pending then approved", []step{
			{0, "", 400, "authorization_pending"},
			{time.Second, "", 400, "authorization_pending"},
			{time.Second, "approve", 200, ""},
			{time.Second, "", 400, "invalid_grant"}, // spent
		}},
		{"slow_down", []step{
			{0, "", 400, "authorization_pending"},
			{0, "", 400, "slow_down"},
			{time.Second, "", 400, "slow_down"}, // the interval was 6s, now 11s
			{6 * time.Second, "", 400, "slow_down"},
			{16 * time.Second, "", 400, "authorization_pending"},
			{16 * time.Second, "", 400, "authorization_pending"},
		}},
		{"jitter is tolerated", []step{
			{0, "", 400, "authorization_pending"},
			{800 * time.Millisecond, "", 400, "authorization_pending"},
		}},
		{"denied", []step{
			{0, "deny", 400, "access_denied"},
			{time.Second, "", 400, "invalid_grant"},
		}},
		{"expired", []step{
			{0, "", 400, "authorization_pending"},
			{10*time.Minute + time.Second, "", 400, "expired_token"},
		}},
		{"approved but expired", []step{
			{0, "approve", 0, ""},
			{10 * time.Minute, "", 400, "expired_token"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dc, uc := f.deviceAuth(nil)
			for i, s := range tt.steps {
				f.clock.Advance(s.advance)
				if s.decide != "" {
					if status, body := f.decide(uc, "ada@vendor.test", s.decide); status != 200 {
						t.Fatalf("step %d: %s = %d %s, want 200", i, s.decide, status, body)
					}
				}
				if s.wantStatus == 0 {
					continue
				}
				if status, code := f.poll(cliClient, dc, nil); status != s.wantStatus || code != s.wantCode {
					t.Errorf("step %d: poll = %d %q, want %d %q", i, status, code, s.wantStatus, s.wantCode)
				}
			}
		})
	}
}

func TestDeviceRefusals(t *testing.T) {
	f := newFixture(t, true, nil)
	t.Run("device/code", func(t *testing.T) {
		tests := []struct {
			name       string
			form       url.Values
			header     http.Header
			wantStatus int
			wantCode   string
		}{
			{"unknown client", url.Values{"client_id": {"mallory"}, "scope": {"openid"}}, nil, 401, "invalid_client"},
			{"no openid", url.Values{"client_id": {cliClient}, "scope": {"email"}}, nil, 400, "invalid_scope"},
			{"plain pkce", url.Values{"client_id": {cliClient}, "scope": {"openid"}, "code_challenge": {"abc"},
				"code_challenge_method": {"plain"}}, nil, 400, "invalid_request"},
			{"basic auth", url.Values{"client_id": {cliClient}, "scope": {"openid"}},
				http.Header{"Authorization": {"Basic dGV0aGVyLWNsaTo="}}, 401, "invalid_client"},
		}
		for _, tt := range tests {
			resp, body := f.postForm(f.idp.IssuerURL("vendor")+"/device/code", tt.form, tt.header)
			if resp.StatusCode != tt.wantStatus || oauthErr(t, body) != tt.wantCode {
				t.Errorf("device/code(%s) = %d %s, want %d %s", tt.name, resp.StatusCode, body, tt.wantStatus, tt.wantCode)
			}
		}
	})
	t.Run("poll by another client", func(t *testing.T) {
		dc, _ := f.deviceAuth(nil)
		if status, code := f.poll(brokerClient, dc, nil); status != 400 || code != "invalid_grant" {
			t.Errorf("poll by another client = %d %q, want 400 invalid_grant", status, code)
		}
	})
	t.Run("pkce", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		form := url.Values{"client_id": {cliClient}, "scope": {"openid"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)},
			"code_challenge_method": {"S256"}}
		dc, uc := f.deviceAuth(form)
		f.decide(uc, "ada@vendor.test", "approve")
		if status, code := f.poll(cliClient, dc, url.Values{"code_verifier": {oauth2.GenerateVerifier()}}); code != "invalid_grant" {
			t.Errorf("poll with a wrong verifier = %d %q, want 400 invalid_grant", status, code)
		}
		dc, uc = f.deviceAuth(form)
		f.decide(uc, "ada@vendor.test", "approve")
		if status, code := f.poll(cliClient, dc, url.Values{"code_verifier": {verifier}}); status != 200 {
			t.Errorf("poll with the verifier = %d %q, want 200", status, code)
		}
	})
	t.Run("decisions", func(t *testing.T) {
		_, uc := f.deviceAuth(nil)
		tests := []struct {
			name, userCode, email, action string
			wantStatus                    int
			wantBody                      string
		}{
			{"unknown user code", "BCDF-GHJK", "ada@vendor.test", "approve", 400, "unknown or expired"},
			{"malformed user code", "<b>", "ada@vendor.test", "approve", 400, "unknown or expired"},
			{"unknown email", uc, "eve@vendor.test", "approve", 400, "no dev user"},
			{"other issuer's user", uc, "carol@acme.test", "approve", 400, "no dev user"},
			{"bad action", uc, "ada@vendor.test", "maybe", 400, "neither approve nor deny"},
			{"approve", uc, "ada@vendor.test", "approve", 200, `{"status":"approved"}`},
			{"approve twice", uc, "ada@vendor.test", "approve", 400, "already approved"},
			{"deny after approve", uc, "", "deny", 400, "already approved"},
		}
		for _, tt := range tests {
			status, body := f.decide(tt.userCode, tt.email, tt.action)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("decide(%s) = %d %s, want %d containing %q", tt.name, status, body, tt.wantStatus, tt.wantBody)
			}
			if status != 200 {
				var e struct {
					Error struct{ Code, Message string } `json:"error"`
				}
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
					t.Errorf("decide(%s) error body %s, want {\"error\":{\"code\",\"message\"}}", tt.name, body)
				}
			}
		}
	})
	t.Run("expired user code", func(t *testing.T) {
		_, uc := f.deviceAuth(nil)
		f.clock.Advance(10*time.Minute + time.Second)
		if status, body := f.decide(uc, "ada@vendor.test", "approve"); status != 400 || !strings.Contains(body, "unknown or expired") {
			t.Errorf("approve an expired code = %d %s, want 400 unknown or expired", status, body)
		}
	})
	t.Run("html", func(t *testing.T) {
		_, uc := f.deviceAuth(nil)
		resp, page := f.get(f.idp.IssuerURL("vendor") + "/device?user_code=" + url.QueryEscape(uc))
		if resp.StatusCode != 200 || !strings.Contains(page, `value="`+uc+`"`) || !strings.Contains(page, cliClient) ||
			!strings.Contains(page, `value="bob@vendor.test"`) || strings.Contains(page, "<script>") {
			t.Errorf("GET /device?user_code = %d, want the form prefilled, the client named and users escaped:\n%s", resp.StatusCode, page)
		}
		resp, page = f.postForm(f.idp.IssuerURL("vendor")+"/device", url.Values{"user_code": {"zzzz-zzzz"}, "action": {"deny"}}, nil)
		if resp.StatusCode != 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(page, "unknown or expired") {
			t.Errorf("POST /device unknown code = %d %s:\n%s, want a 400 HTML page", resp.StatusCode, resp.Header.Get("Content-Type"), page)
		}
		resp, page = f.postForm(f.idp.IssuerURL("vendor")+"/device", url.Values{"user_code": {uc}, "action": {"deny"}}, nil)
		if resp.StatusCode != 200 || !strings.Contains(page, "Device denied") {
			t.Errorf("POST /device deny = %d:\n%s, want 200 Device denied", resp.StatusCode, page)
		}
	})
}

// TestDeviceDeniedThroughClient checks oauth2's DeviceAccessToken sees
// access_denied.
func TestDeviceDeniedThroughClient(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	conf := oauthConfig(f.provider("vendor"), cliClient)
	ctx, cancel := context.WithTimeout(f.ctx(), 5*time.Second)
	defer cancel()
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := f.decide(da.UserCode, "", "deny"); status != 200 {
		t.Fatalf("deny = %d %s", status, body)
	}
	_, err = conf.DeviceAccessToken(ctx, da)
	if re, ok := err.(*oauth2.RetrieveError); !ok || re.ErrorCode != "access_denied" {
		t.Errorf("DeviceAccessToken() = %v, want access_denied", err)
	}
}
