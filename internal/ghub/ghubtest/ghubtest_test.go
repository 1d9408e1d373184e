package ghubtest

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func TestAppJWTValidation(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s := NewServer(t)
	s.SetClock(func() time.Time { return now })
	keyPEM, pub := NewAppKey(t)
	s.SetApp(42, 7, pub)
	block, _ := pem.Decode([]byte(keyPEM))
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _ := NewAppKey(t)
	block, _ = pem.Decode([]byte(otherPEM))
	other, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}

	sign := func(k *rsa.PrivateKey, c jwt.Claims) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := jwt.Signed(signer).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	claims := func(iss string, iat, exp time.Duration) jwt.Claims {
		return jwt.Claims{Issuer: iss, IssuedAt: jwt.NewNumericDate(now.Add(iat)), Expiry: jwt.NewNumericDate(now.Add(exp))}
	}
	tests := []struct {
		name string
		path string
		auth string
		want int
	}{
		{"valid", "7", "Bearer " + sign(key, claims("42", -time.Minute, 9*time.Minute)), http.StatusCreated},
		{"wrong installation", "8", "Bearer " + sign(key, claims("42", -time.Minute, 9*time.Minute)), http.StatusNotFound},
		{"wrong key", "7", "Bearer " + sign(other, claims("42", -time.Minute, 9*time.Minute)), http.StatusUnauthorized},
		{"wrong issuer", "7", "Bearer " + sign(key, claims("43", -time.Minute, 9*time.Minute)), http.StatusUnauthorized},
		{"issued in the future", "7", "Bearer " + sign(key, claims("42", time.Minute, 9*time.Minute)), http.StatusUnauthorized},
		{"expired", "7", "Bearer " + sign(key, claims("42", -11*time.Minute, -time.Minute)), http.StatusUnauthorized},
		{"over 10 minutes", "7", "Bearer " + sign(key, claims("42", -time.Minute, 10*time.Minute)), http.StatusUnauthorized},
		{"token scheme", "7", "token " + sign(key, claims("42", -time.Minute, 9*time.Minute)), http.StatusUnauthorized},
		{"no jwt", "7", "", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, s.URL()+"app/installations/"+tt.path+"/access_tokens", nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("POST access_tokens (%s) = %d, want %d", tt.name, resp.StatusCode, tt.want)
			}
		})
	}
	if n := s.InstallationTokens(); n != 1 {
		t.Errorf("InstallationTokens() = %d, want 1", n)
	}
}
