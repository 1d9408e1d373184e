package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries the signature of a delivery:
//
//	t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>
//
// The timestamp is signed with the body so that a captured delivery
// cannot be replayed after the receiver's tolerance; it is taken at each
// attempt, so retries are not stale.
const SignatureHeader = "Tether-Signature"

// DefaultTolerance is how far from the receiver's clock a signature's
// timestamp may be when [Verify] is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// Errors returned by [Verify], for receivers to branch on.
var (
	ErrSignatureMalformed = errors.New("malformed signature header")
	ErrSignatureMismatch  = errors.New("signature does not match")
	ErrSignatureStale     = errors.New("signature timestamp outside tolerance")
)

// maxSignatureHeader bounds the header Verify parses: one timestamp and a
// few signatures.
const maxSignatureHeader = 1024

// Sign returns the [SignatureHeader] value for body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a [SignatureHeader] value against body: the header must be
// well formed, one of its v1 signatures must be the HMAC of its timestamp
// and body under secret (compared in constant time), and the timestamp
// must be within tolerance of now, before or after; tolerance <= 0 means
// [DefaultTolerance]. Unknown schemes in the header are ignored, and
// several v1 signatures may be given (as while a secret is rotated).
// Errors wrap [ErrSignatureMalformed], [ErrSignatureMismatch] or
// [ErrSignatureStale].
//
// Verify does not stop a delivery being replayed within the tolerance:
// receivers deduplicate on the Tether-Delivery header.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if len(secret) == 0 {
		return errors.New("verify webhook signature: empty secret")
	}
	ts, sigs, err := parseSignature(header)
	if err != nil {
		return fmt.Errorf("verify webhook signature: %w", err)
	}
	want := mac(secret, ts, body)
	match := false
	for _, s := range sigs {
		// Compare every signature, whatever came before.
		match = hmac.Equal(s, want) || match
	}
	if !match {
		return fmt.Errorf("verify webhook signature: %w", ErrSignatureMismatch)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	secs, _ := strconv.ParseInt(ts, 10, 64) // checked by parseSignature
	if skew := now.Sub(time.Unix(secs, 0)); skew > tolerance || skew < -tolerance {
		return fmt.Errorf("verify webhook signature: timestamp is %v from now, more than %v: %w", skew.Round(time.Second), tolerance, ErrSignatureStale)
	}
	return nil
}

// parseSignature splits a header into its timestamp, verbatim, and its v1
// signatures. It never echoes the header: errors may be logged.
func parseSignature(header string) (ts string, sigs [][]byte, err error) {
	if header == "" {
		return "", nil, fmt.Errorf("empty: %w", ErrSignatureMalformed)
	}
	if len(header) > maxSignatureHeader {
		return "", nil, fmt.Errorf("longer than %d bytes: %w", maxSignatureHeader, ErrSignatureMalformed)
	}
	seenT := false
	for i, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || k == "" {
			return "", nil, fmt.Errorf("part %d is not key=value: %w", i, ErrSignatureMalformed)
		}
		switch k {
		case "t":
			if seenT {
				return "", nil, fmt.Errorf("t given twice: %w", ErrSignatureMalformed)
			}
			seenT = true
			if !isTimestamp(v) {
				return "", nil, fmt.Errorf("t is not unix seconds: %w", ErrSignatureMalformed)
			}
			ts = v
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return "", nil, fmt.Errorf("v1 is not %d hex digits: %w", 2*sha256.Size, ErrSignatureMalformed)
			}
			sigs = append(sigs, sig)
		}
	}
	if !seenT {
		return "", nil, fmt.Errorf("no t: %w", ErrSignatureMalformed)
	}
	if len(sigs) == 0 {
		return "", nil, fmt.Errorf("no v1 signature: %w", ErrSignatureMalformed)
	}
	return ts, sigs, nil
}

// isTimestamp reports whether v is unix seconds as Sign writes them:
// decimal digits, no sign, no leading zero, fitting an int64.
func isTimestamp(v string) bool {
	if v == "" || len(v) > 18 || (v[0] == '0' && len(v) > 1) {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
