package devidp_test

import (
	"context"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

func kidOf(t *testing.T, token string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("ParseSigned() = %v", err)
	}
	return jws.Signatures[0].Header.KeyID
}

func (f *fixture) mint(issuer, email, clientID, nonce string) string {
	f.t.Helper()
	tok, err := f.idp.Token(issuer, email, clientID, nonce)
	if err != nil {
		f.t.Fatalf("Token(%s, %s) = %v", issuer, email, err)
	}
	return tok
}

func (f *fixture) keySet(issuer string) *oidc.RemoteKeySet {
	return oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), f.srv.Client()), f.idp.IssuerURL(issuer)+"/jwks")
}

func TestToken(t *testing.T) {
	f := newFixture(t, true, nil)
	ctx := f.ctx()
	tok := f.mint("vendor", "ada@vendor.test", "anything", "n")
	idt, err := f.verifier(f.provider("vendor"), "anything").Verify(ctx, tok)
	if err != nil {
		t.Fatalf("Verify(Token()) = %v", err)
	}
	if idt.Nonce != "n" || !idt.IssuedAt.Equal(testNow) || !idt.Expiry.Equal(testNow.Add(15*60e9)) {
		t.Errorf("Token() nonce %q iat %v exp %v, want n, %v and 15m later", idt.Nonce, idt.IssuedAt, idt.Expiry, testNow)
	}
	if c := claimsOf(t, idt); c["at_hash"] != nil {
		t.Errorf("Token() has at_hash %v without an access token", c["at_hash"])
	}
	for _, tt := range []struct{ issuer, email, clientID, want string }{
		{"nope", "ada@vendor.test", "c", `no issuer "nope"`},
		{"vendor", "carol@acme.test", "c", `no dev user "carol@acme.test"`},
		{"vendor", "ada@vendor.test", "", "empty client id"},
	} {
		if _, err := f.idp.Token(tt.issuer, tt.email, tt.clientID, ""); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Token(%q, %q, %q) = %v, want error containing %q", tt.issuer, tt.email, tt.clientID, err, tt.want)
		}
	}
}

// TestIssuersHaveDistinctKeys: a token of one issuer does not verify
// against another's JWKS.
func TestIssuersHaveDistinctKeys(t *testing.T) {
	f := newFixture(t, false, nil)
	ctx := f.ctx()
	vendorTok := f.mint("vendor", "ada@vendor.test", brokerClient, "")
	acmeTok := f.mint("acme", "carol@acme.test", brokerClient, "")
	if kidOf(t, vendorTok) == kidOf(t, acmeTok) {
		t.Errorf("vendor and acme tokens share kid %q", kidOf(t, vendorTok))
	}
	tests := []struct {
		token, keys string
		wantOK      bool
	}{
		{vendorTok, "vendor", true},
		{acmeTok, "acme", true},
		{vendorTok, "acme", false},
		{acmeTok, "vendor", false},
	}
	for _, tt := range tests {
		_, err := f.keySet(tt.keys).VerifySignature(ctx, tt.token)
		if (err == nil) != tt.wantOK {
			t.Errorf("VerifySignature(%s token, %s JWKS) = %v, want ok %v", map[string]string{vendorTok: "vendor", acmeTok: "acme"}[tt.token], tt.keys, err, tt.wantOK)
		}
	}
	if _, err := f.verifier(f.provider("acme"), brokerClient).Verify(ctx, vendorTok); err == nil {
		t.Error("acme verifier accepted a vendor token")
	}
}

func TestRotateKey(t *testing.T) {
	f := newFixture(t, false, nil)
	ctx := f.ctx()
	v := f.verifier(f.provider("vendor"), cliClient)
	old := f.mint("vendor", "ada@vendor.test", cliClient, "")
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatalf("Verify(old) = %v", err)
	}

	if err := f.idp.RotateKey("vendor"); err != nil {
		t.Fatalf("RotateKey() = %v", err)
	}
	fresh := f.mint("vendor", "ada@vendor.test", cliClient, "")
	if kidOf(t, fresh) == kidOf(t, old) {
		t.Fatalf("kid after RotateKey = %q, want a new one", kidOf(t, fresh))
	}
	// The verifier has the old key cached and refetches for the new kid.
	for name, tok := range map[string]string{"new": fresh, "old": old} {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Errorf("Verify(%s token) after rotation = %v", name, err)
		}
		if _, err := f.keySet("vendor").VerifySignature(ctx, tok); err != nil {
			t.Errorf("fresh JWKS: VerifySignature(%s token) after rotation = %v", name, err)
		}
	}
	if acme := f.mint("acme", "carol@acme.test", brokerClient, ""); kidOf(t, acme) == kidOf(t, fresh) {
		t.Error("RotateKey(vendor) changed acme's key")
	}

	if err := f.idp.RetireOldKeys("vendor"); err != nil {
		t.Fatalf("RetireOldKeys() = %v", err)
	}
	if _, err := f.keySet("vendor").VerifySignature(ctx, old); err == nil {
		t.Error("old token verifies after RetireOldKeys")
	}
	if _, err := f.keySet("vendor").VerifySignature(ctx, fresh); err != nil {
		t.Errorf("new token after RetireOldKeys: %v", err)
	}
	if err := f.idp.RotateKey("nope"); err == nil {
		t.Error("RotateKey(nope) = nil, want an error")
	}
}
