package broker_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokercli"
	"github.com/tetherhq/tether/internal/brokertest"
)

// TestAuthConfigNamesOnlyTheAskedIssuer: GET /api/v1/auth/config needs
// no credentials, so it must not tell an anonymous caller who the
// broker's customers are. It answers for the issuer the caller names, or
// the vendor's; it used to list every tenant and its identity provider.
func TestAuthConfigNamesOnlyTheAskedIssuer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	onTailnet := externalTailnet(t, ctx)
	b := brokertest.Start(t, func(c *broker.Config) {
		onTailnet(c)
	})
	anon := func(query string) (int, string) {
		t.Helper()
		res, err := http.Get(b.APIURL() + "/api/v1/auth/config" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	for _, tt := range []struct {
		query      string
		status     int
		want       []string // issuer names answered
		notInReply []string
	}{
		{"", http.StatusOK, []string{"vendor"}, []string{"acme", "globex"}},
		{"?issuer=vendor", http.StatusOK, []string{"vendor"}, []string{"acme", "globex"}},
		{"?issuer=acme", http.StatusOK, []string{"acme"}, []string{"globex"}},
		{"?issuer=initech", http.StatusNotFound, nil, []string{"acme", "globex", "vendor"}},
		{"?issuer=" + strings.Repeat("a", 100), http.StatusBadRequest, nil, []string{"acme", "globex"}},
	} {
		status, body := anon(tt.query)
		if status != tt.status {
			t.Errorf("GET auth/config%s = %d %s, want %d", tt.query, status, body, tt.status)
			continue
		}
		for _, s := range tt.notInReply {
			if strings.Contains(body, s) {
				t.Errorf("GET auth/config%s answers %s, which names %q", tt.query, body, s)
			}
		}
		if status != http.StatusOK {
			continue
		}
		var ac brokerapi.AuthConfig
		if err := json.Unmarshal([]byte(body), &ac); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, is := range ac.Issuers {
			got = append(got, is.Name)
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") || ac.Dev || len(ac.DevUsers) != 0 {
			t.Errorf("GET auth/config%s = issuers %v dev %v, want %v only", tt.query, got, ac.Dev, tt.want)
		}
	}

	// Nor does the signed-out web page, or the refusal of a token from
	// an issuer the broker does not trust.
	res, err := http.Get(b.APIURL() + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(page), "issuer=vendor") || strings.Contains(string(page), "acme") || strings.Contains(string(page), "globex") {
		t.Errorf("signed-out /ui/ = %s, want the vendor's sign-in only, naming no customer", page)
	}
	forged := forgedToken(t, "https://idp.initech.example")
	req, _ := http.NewRequest(http.MethodGet, b.APIURL()+"/api/v1/deployments", nil)
	req.Header.Set("Authorization", "Bearer "+forged)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "unknown_issuer") || strings.Contains(string(body), "acme") || strings.Contains(string(body), "globex") {
		t.Errorf("a token of an unknown issuer = %d %s, want 401 unknown_issuer naming no customer", res.StatusCode, body)
	}
}

// forgedToken is an unsigned-looking JWT naming issuer iss: enough for
// the broker to route it by issuer and refuse it.
func forgedToken(t *testing.T, iss string) string {
	t.Helper()
	enc := func(v any) string {
		raw, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	return enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "x"}) + "." +
		enc(map[string]any{"iss": iss, "sub": "mallory", "aud": "tether", "exp": time.Now().Add(time.Hour).Unix()}) + "." +
		base64.RawURLEncoding.EncodeToString([]byte("sig"))
}

// TestLoginAsCustomerApprover: 'broker login' still finds a customer's
// issuer now that the broker names only the one asked for: by --issuer,
// or on a dev broker from the dev user.
func TestLoginAsCustomerApprover(t *testing.T) {
	b := brokertest.Start(t, nil)
	for _, args := range [][]string{
		{"--dev-user", "approver@acme.test"},
		{"--issuer", "acme", "--dev-user", "approver@acme.test"},
		{"--dev-user", "engineer@vendor.test"},
	} {
		cfg := filepath.Join(t.TempDir(), "cli.json")
		var out, errOut bytes.Buffer
		err := brokercli.Run(context.Background(), append([]string{"login", "--api-url", b.APIURL(), "--config", cfg}, args...), &out, &errOut)
		if err != nil {
			t.Errorf("login %v: %v (%s)", args, err, errOut.String())
			continue
		}
		user := args[len(args)-1]
		if !strings.Contains(out.String(), "Logged in as "+user) {
			t.Errorf("login %v printed %q, want it logged in as %s", args, out.String(), user)
		}
	}
	var errOut bytes.Buffer
	err := brokercli.Run(context.Background(), []string{"login", "--api-url", b.APIURL(), "--config", filepath.Join(t.TempDir(), "cli.json"), "--issuer", "initech", "--dev-user", "approver@acme.test"}, io.Discard, &errOut)
	if err == nil || !strings.Contains(err.Error(), `--issuer "initech": the broker has no identity provider by that name`) {
		t.Errorf("login --issuer initech = %v, want the unknown issuer named", err)
	}
}
