package notify_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/notify"
)

var (
	secret = []byte("0123456789abcdef0123456789abcdef")
	epoch  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

// independentSign computes the header from its definition, without the
// package's code.
func independentSign(secret []byte, t time.Time, body []byte) string {
	h := hmac.New(sha256.New, secret)
	fmt.Fprintf(h, "%d.%s", t.Unix(), body)
	return fmt.Sprintf("t=%d,v1=%x", t.Unix(), h.Sum(nil))
}

func TestSignMatchesDefinition(t *testing.T) {
	body := []byte(`{"id":"x","type":"request.created"}`)
	got := notify.Sign(secret, epoch, body)
	if want := independentSign(secret, epoch, body); got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
	if err := notify.Verify(secret, independentSign(secret, epoch, body), body, epoch, time.Minute); err != nil {
		t.Errorf("Verify(independent signature) = %v, want nil", err)
	}
}

func TestVerify(t *testing.T) {
	body := []byte(`{"id":"x"}`)
	good := notify.Sign(secret, epoch, body)
	other := notify.Sign([]byte("another secret of thirty-two bytes!"), epoch, body)
	sig := good[strings.Index(good, "v1="):]
	ts := fmt.Sprintf("t=%d", epoch.Unix())

	tests := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error // nil, or the sentinel wrapped
	}{
		{"valid", secret, good, body, epoch, nil},
		{"valid with spaces", secret, ts + ", " + sig, body, epoch, nil},
		{"valid within tolerance, receiver behind", secret, good, body, epoch.Add(-4 * time.Minute), nil},
		{"valid within tolerance, receiver ahead", secret, good, body, epoch.Add(4 * time.Minute), nil},
		{"unknown scheme ignored", secret, good + ",v0=abc", body, epoch, nil},
		{"second v1 during rotation", secret, other + "," + sig, body, epoch, nil},
		{"wrong secret", []byte("another secret of thirty-two bytes!"), good, body, epoch, notify.ErrSignatureMismatch},
		{"tampered body", secret, good, []byte(`{"id":"y"}`), epoch, notify.ErrSignatureMismatch},
		{"empty body", secret, good, nil, epoch, notify.ErrSignatureMismatch},
		{"timestamp changed", secret, fmt.Sprintf("t=%d,", epoch.Unix()+1) + sig, body, epoch, notify.ErrSignatureMismatch},
		{"stale", secret, good, body, epoch.Add(6 * time.Minute), notify.ErrSignatureStale},
		{"from the future", secret, good, body, epoch.Add(-6 * time.Minute), notify.ErrSignatureStale},
		{"forged and stale", secret, other, body, epoch.Add(time.Hour), notify.ErrSignatureMismatch},
		{"empty", secret, "", body, epoch, notify.ErrSignatureMalformed},
		{"no t", secret, sig, body, epoch, notify.ErrSignatureMalformed},
		{"no v1", secret, ts, body, epoch, notify.ErrSignatureMalformed},
		{"t twice", secret, ts + "," + good, body, epoch, notify.ErrSignatureMalformed},
		{"t not a number", secret, "t=soon," + sig, body, epoch, notify.ErrSignatureMalformed},
		{"t negative", secret, "t=-1," + sig, body, epoch, notify.ErrSignatureMalformed},
		{"t leading zero", secret, "t=0" + ts[2:] + "," + sig, body, epoch, notify.ErrSignatureMalformed},
		{"t empty", secret, "t=," + sig, body, epoch, notify.ErrSignatureMalformed},
		{"t too large", secret, "t=99999999999999999999," + sig, body, epoch, notify.ErrSignatureMalformed},
		{"v1 not hex", secret, ts + ",v1=" + strings.Repeat("zz", 32), body, epoch, notify.ErrSignatureMalformed},
		{"v1 short", secret, ts + ",v1=" + hex.EncodeToString(make([]byte, 16)), body, epoch, notify.ErrSignatureMalformed},
		{"v1 empty", secret, ts + ",v1=", body, epoch, notify.ErrSignatureMalformed},
		{"not key=value", secret, good + ",junk", body, epoch, notify.ErrSignatureMalformed},
		{"empty key", secret, good + ",=x", body, epoch, notify.ErrSignatureMalformed},
		{"trailing comma", secret, good + ",", body, epoch, notify.ErrSignatureMalformed},
		{"semicolons", secret, strings.ReplaceAll(good, ",", ";"), body, epoch, notify.ErrSignatureMalformed},
		{"huge", secret, good + strings.Repeat(",x=y", 1000), body, epoch, notify.ErrSignatureMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := notify.Verify(tt.secret, tt.header, tt.body, tt.now, 5*time.Minute)
			if tt.want == nil {
				if err != nil {
					t.Errorf("Verify(%q) = %v, want nil", tt.header, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Verify(%q) = %v, want %v", tt.header, err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), sig[3:]) {
				t.Errorf("Verify error %q repeats the signature", err)
			}
		})
	}
}

func TestVerifyEmptySecret(t *testing.T) {
	body := []byte("{}")
	if err := notify.Verify(nil, notify.Sign(nil, epoch, body), body, epoch, 0); err == nil {
		t.Error("Verify(nil secret) = nil, want an error")
	}
}

func TestVerifyDefaultTolerance(t *testing.T) {
	body := []byte("{}")
	h := notify.Sign(secret, epoch, body)
	if err := notify.Verify(secret, h, body, epoch.Add(notify.DefaultTolerance-time.Second), 0); err != nil {
		t.Errorf("Verify(just inside default tolerance) = %v, want nil", err)
	}
	if err := notify.Verify(secret, h, body, epoch.Add(notify.DefaultTolerance+time.Second), 0); !errors.Is(err, notify.ErrSignatureStale) {
		t.Errorf("Verify(just outside default tolerance) = %v, want %v", err, notify.ErrSignatureStale)
	}
}

func FuzzVerify(f *testing.F) {
	body := []byte(`{"id":"x"}`)
	f.Add(notify.Sign(secret, epoch, body), body)
	f.Add("t=1,v1=00", body)
	f.Add("t=,v1=,,", []byte{})
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := notify.Verify(secret, header, body, epoch, time.Minute)
		if err != nil && !errors.Is(err, notify.ErrSignatureMalformed) && !errors.Is(err, notify.ErrSignatureMismatch) && !errors.Is(err, notify.ErrSignatureStale) {
			t.Errorf("Verify(%q) = %v, want one of the sentinel errors", header, err)
		}
		if err := notify.Verify(secret, notify.Sign(secret, epoch, body), body, epoch, time.Minute); err != nil {
			t.Errorf("Verify(Sign(%q)) = %v, want nil", body, err)
		}
	})
}
