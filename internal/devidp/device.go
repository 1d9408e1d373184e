package devidp

import (
	"crypto/rand"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// userCodeAlphabet has no vowels (no words) and none of the letters
// easily confused with each other or with digits (RFC 8628 §6.1).
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

type deviceState int

const (
	devicePending deviceState = iota
	deviceApproved
	deviceDenied
)

func (s deviceState) String() string {
	switch s {
	case deviceApproved:
		return "approved"
	case deviceDenied:
		return "denied"
	}
	return "pending"
}

// deviceRequest is a device authorization request (RFC 8628) waiting
// for the dev user's decision and the device's poll.
type deviceRequest struct {
	key       string // its key in issuer.devices
	userCode  string // normalised: 8 letters, no dash
	clientID  string
	scope     string
	nonce     string
	challenge string // optional S256 code_challenge
	expires   time.Time
	interval  time.Duration // grows by slowDownStep on every slow_down
	lastPoll  time.Time
	state     deviceState
	email     string
	authTime  time.Time
}

// deviceAuthResponse is an RFC 8628 §3.2 device authorization response.
type deviceAuthResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int64  `json:"expires_in"`
	Interval                int64  `json:"interval"`
}

func (is *issuer) serveDeviceCode(w http.ResponseWriter, r *http.Request) {
	resp, oe := is.deviceCode(w, r)
	if oe != nil {
		is.writeOAuthError(w, oe)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
}

func (is *issuer) deviceCode(w http.ResponseWriter, r *http.Request) (*deviceAuthResponse, *oauthError) {
	ps, clientID, oe := is.readClientForm(w, r)
	if oe != nil {
		return nil, oe
	}
	scope, challenge, method, nonce := ps.get("scope"), ps.get("code_challenge"), ps.get("code_challenge_method"), ps.get("nonce")
	switch {
	case ps.err != nil:
		return nil, badRequest("invalid_request", "%v", ps.err)
	case !slices.Contains(strings.Fields(scope), "openid"):
		return nil, badRequest("invalid_scope", "scope must include openid")
	case (challenge != "" || method != "") && method != "S256":
		return nil, badRequest("invalid_request", "code_challenge_method %q is not supported; use S256", method)
	case method != "" && !isS256Challenge(challenge):
		return nil, badRequest("invalid_request", "code_challenge must be the 43-character base64url SHA-256 of the code_verifier")
	}

	now := is.p.now()
	deviceCode := rand.Text()
	d := &deviceRequest{
		key:       secretKey(deviceCode),
		clientID:  clientID,
		scope:     grantedScope(scope),
		nonce:     nonce,
		challenge: challenge,
		expires:   now.Add(deviceTTL),
		interval:  is.p.interval,
	}
	is.mu.Lock()
	for {
		// 20^8 codes against at most maxPending live ones: a repeat is
		// rare and the loop short.
		d.userCode = newUserCode()
		if _, taken := is.userCodes.get(now, d.userCode); !taken {
			break
		}
	}
	// Both tables have the same lifetime and bound and change together,
	// so they evict the same requests.
	is.devices.put(now, d.key, d)
	is.userCodes.put(now, d.userCode, d.key)
	is.mu.Unlock()

	verify := is.url + "/device"
	return &deviceAuthResponse{
		DeviceCode:              deviceCode,
		UserCode:                formatUserCode(d.userCode),
		VerificationURI:         verify,
		VerificationURIComplete: verify + "?" + url.Values{"user_code": {formatUserCode(d.userCode)}}.Encode(),
		ExpiresIn:               int64(deviceTTL / time.Second),
		Interval:                int64(d.interval / time.Second),
	}, nil
}

// deviceGrant answers a device's poll (RFC 8628 §3.4, §3.5).
func (is *issuer) deviceGrant(ps *params, clientID string) (*tokenResponse, *oauthError) {
	dc, verifier := ps.get("device_code"), ps.get("code_verifier")
	switch {
	case ps.err != nil:
		return nil, badRequest("invalid_request", "%v", ps.err)
	case dc == "":
		return nil, badRequest("invalid_request", "device_code is missing")
	}
	now := is.p.now()
	g, oe := func() (*grant, *oauthError) {
		is.mu.Lock()
		defer is.mu.Unlock()
		d, ok := is.devices.get(now, secretKey(dc))
		switch {
		case !ok:
			return nil, badRequest("invalid_grant", "device_code is unknown or long expired")
		case d.clientID != clientID:
			return nil, badRequest("invalid_grant", "device_code was issued to another client")
		case !now.Before(d.expires):
			is.dropDevice(d)
			return nil, badRequest("expired_token", "the device code expired; start again")
		}
		// A quarter of the interval is allowed for timer jitter: a client
		// ticking at exactly the interval must not be slowed down.
		if !d.lastPoll.IsZero() && now.Sub(d.lastPoll) < d.interval-d.interval/4 {
			d.interval += slowDownStep
			d.lastPoll = now
			return nil, badRequest("slow_down", "polled too fast; wait %d seconds between polls", d.interval/time.Second)
		}
		d.lastPoll = now
		switch d.state {
		case devicePending:
			return nil, badRequest("authorization_pending", "the dev user has not approved the request yet")
		case deviceDenied:
			is.dropDevice(d)
			return nil, badRequest("access_denied", "the dev user denied the request")
		}
		is.dropDevice(d)
		if d.challenge != "" && (!isCodeVerifier(verifier) || !verifierMatches(verifier, d.challenge)) {
			return nil, badRequest("invalid_grant", "code_verifier is missing or does not match the code_challenge")
		}
		return &grant{clientID: d.clientID, email: d.email, scope: d.scope, nonce: d.nonce, authTime: d.authTime}, nil
	}()
	if oe != nil {
		return nil, oe
	}
	return is.issueTokens(*g, now)
}

// dropDevice removes d; is.mu must be held.
func (is *issuer) dropDevice(d *deviceRequest) {
	is.devices.delete(d.key)
	is.userCodes.delete(d.userCode)
}

// lookupDevice returns the live device request of a user code as typed
// by a person; is.mu must be held.
func (is *issuer) lookupDevice(now time.Time, typed string) (*deviceRequest, bool) {
	uc := normalizeUserCode(typed)
	if uc == "" {
		return nil, false
	}
	key, ok := is.userCodes.get(now, uc)
	if !ok {
		return nil, false
	}
	d, ok := is.devices.get(now, key)
	if !ok || d.userCode != uc || !now.Before(d.expires) {
		return nil, false
	}
	return d, true
}

func (is *issuer) serveDevicePage(w http.ResponseWriter, r *http.Request) {
	vals, err := readQuery(r)
	if err != nil {
		is.errorPage(w, http.StatusBadRequest, "Bad device request", err.Error())
		return
	}
	ps := params{v: vals}
	typed := ps.get("user_code")
	if ps.err != nil {
		is.errorPage(w, http.StatusBadRequest, "Bad device request", ps.err.Error())
		return
	}
	page := devicePage{UserCode: typed}
	if typed != "" {
		is.mu.Lock()
		d, ok := is.lookupDevice(is.p.now(), typed)
		if ok {
			page.ClientID, page.Scope, page.State = d.clientID, d.scope, d.state.String()
		}
		is.mu.Unlock()
		if !ok {
			page.Error = fmt.Sprintf("User code %q is unknown or expired.", typed)
		}
	}
	is.devicePage(w, http.StatusOK, page)
}

func (is *issuer) serveDeviceDecision(w http.ResponseWriter, r *http.Request) {
	asJSON := wantsJSON(r)
	fail := func(code, msg string) {
		if asJSON {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{"code": code, "message": msg}})
			return
		}
		is.errorPage(w, http.StatusBadRequest, "Device not approved", msg)
	}
	vals, err := readForm(w, r)
	if err != nil {
		fail("invalid_request", err.Error())
		return
	}
	ps := params{v: vals}
	typed, email, action := ps.get("user_code"), ps.get("email"), ps.get("action")
	if ps.err != nil {
		fail("invalid_request", ps.err.Error())
		return
	}
	if action != "approve" && action != "deny" {
		fail("invalid_request", fmt.Sprintf("action %q is neither approve nor deny", action))
		return
	}
	u, known := is.byEmail[email]
	if action == "approve" && !known {
		fail("unknown_user", fmt.Sprintf("there is no dev user %q of issuer %q", email, is.name))
		return
	}

	now := is.p.now()
	is.mu.Lock()
	d, ok := is.lookupDevice(now, typed)
	var state deviceState
	if ok {
		state = d.state
		if state == devicePending {
			if action == "approve" {
				d.state, d.email, d.authTime = deviceApproved, u.email, now
			} else {
				d.state = deviceDenied
			}
		}
	}
	is.mu.Unlock()
	switch {
	case !ok:
		fail("invalid_user_code", fmt.Sprintf("user code %q is unknown or expired; check it on your device or start again", typed))
		return
	case state != devicePending:
		fail("invalid_user_code", fmt.Sprintf("user code %q was already %s", typed, state))
		return
	}
	status := "approved"
	if action == "deny" {
		status = "denied"
	}
	if asJSON {
		writeJSON(w, http.StatusOK, map[string]string{"status": status})
		return
	}
	is.messagePage(w, http.StatusOK, "Device "+status, "You may close this page and return to your device.")
}

// wantsJSON reports whether the request's Accept lists application/json.
func wantsJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/json" {
			return true
		}
	}
	return false
}

// newUserCode returns 8 letters from userCodeAlphabet, uniformly.
func newUserCode() string {
	var code [8]byte
	buf := make([]byte, 16)
	n := 0
	for n < len(code) {
		rand.Read(buf) // never fails (crypto/rand)
		for _, b := range buf {
			// 240 is the largest multiple of 20 not over 256:
			// rejecting above it keeps every letter equally likely.
			if b < 240 && n < len(code) {
				code[n] = userCodeAlphabet[int(b)%len(userCodeAlphabet)]
				n++
			}
		}
	}
	return string(code[:])
}

// normalizeUserCode returns a typed user code in upper case without
// dashes or spaces, or "" if it cannot be a user code.
func normalizeUserCode(typed string) string {
	if len(typed) > 32 {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(typed); i++ {
		c := typed[i]
		switch {
		case c == '-' || c == ' ' || c == '\t':
			continue
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		}
		if strings.IndexByte(userCodeAlphabet, c) < 0 {
			return ""
		}
		b.WriteByte(c)
	}
	if b.Len() != 8 {
		return ""
	}
	return b.String()
}

func formatUserCode(uc string) string { return uc[:4] + "-" + uc[4:] }
