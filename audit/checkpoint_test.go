package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// testKey returns a signer and verifier for a deterministic Ed25519 key.
func testKey(t testing.TB, name string, seed byte) (note.Signer, note.Verifier) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	s, err := NewSigner(name, priv)
	if err != nil {
		t.Fatalf("NewSigner(%q) = %v", name, err)
	}
	vkey, err := VerifierKey(name, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatalf("VerifierKey(%q) = %v", name, err)
	}
	v, err := NewVerifier(vkey)
	if err != nil {
		t.Fatalf("NewVerifier(%q) = %v", vkey, err)
	}
	return s, v
}

var testCheckpoint = Checkpoint{
	Origin: "tether.test/log",
	Size:   42,
	Root:   [32]byte{1, 2, 3},
	Time:   time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC),
}

func TestCheckpointBody(t *testing.T) {
	want := "tether.test/log\n42\n" + base64.StdEncoding.EncodeToString(testCheckpoint.Root[:]) + "\ntime 2026-11-25T12:00:00.123456789Z\n"
	if got := testCheckpoint.Body(); got != want {
		t.Errorf("Body() = %q, want %q", got, want)
	}
	got, err := ParseCheckpoint(want)
	if err != nil || got != testCheckpoint {
		t.Errorf("ParseCheckpoint(%q) = %+v, %v, want %+v", want, got, err, testCheckpoint)
	}
	// A time in another zone is written in UTC.
	c := testCheckpoint
	c.Time = c.Time.In(time.FixedZone("X", 3600))
	if got := c.Body(); got != want {
		t.Errorf("Body() with a non-UTC time = %q, want %q", got, want)
	}
}

func TestParseCheckpointErrors(t *testing.T) {
	good := testCheckpoint.Body()
	lines := strings.SplitAfter(good, "\n")
	root := strings.TrimSuffix(lines[2], "\n")
	for _, tc := range []struct{ name, body string }{
		{"empty", ""},
		{"no final newline", strings.TrimSuffix(good, "\n")},
		{"no time", strings.Join(lines[:3], "")},
		{"extra line", good + "other\n"},
		{"empty origin", "\n" + strings.Join(lines[1:], "")},
		{"negative size", lines[0] + "-1\n" + strings.Join(lines[2:], "")},
		{"leading zero", lines[0] + "042\n" + strings.Join(lines[2:], "")},
		{"size with plus", lines[0] + "+42\n" + strings.Join(lines[2:], "")},
		{"short root", lines[0] + lines[1] + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n" + lines[3]},
		{"root not base64", lines[0] + lines[1] + "!!!\n" + lines[3]},
		{"root unpadded", lines[0] + lines[1] + strings.TrimRight(root, "=") + "\n" + lines[3]},
		{"wrong extension", strings.Join(lines[:3], "") + "when 2026-11-25T12:00:00Z\n"},
		{"bad time", strings.Join(lines[:3], "") + "time yesterday\n"},
		{"time with offset", strings.Join(lines[:3], "") + "time 2026-11-25T13:00:00+01:00\n"},
		{"time with trailing zeros", strings.Join(lines[:3], "") + "time 2026-11-25T12:00:00.100Z\n"},
		{"CRLF", strings.ReplaceAll(good, "\n", "\r\n")},
	} {
		if c, err := ParseCheckpoint(tc.body); err == nil {
			t.Errorf("%s: ParseCheckpoint(%q) = %+v, nil, want error", tc.name, tc.body, c)
		}
	}
}

// TestNewSignerMatchesNote checks NewSigner against the key and signature
// in golang.org/x/mod/sumdb/note's documentation.
func TestNewSignerMatchesNote(t *testing.T) {
	const (
		skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
		vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
		text = "If you think cryptography is the answer to your problem,\n" +
			"then you don't know what your problem is.\n"
		want = text + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
	)
	enc, _ := base64.StdEncoding.DecodeString(skey[len("PRIVATE+KEY+PeterNeumann+c74f20a3+"):])
	priv := ed25519.NewKeyFromSeed(enc[1:])
	s, err := NewSigner("PeterNeumann", priv)
	if err != nil {
		t.Fatalf("NewSigner = %v", err)
	}
	if s.KeyHash() != 0xc74f20a3 {
		t.Errorf("KeyHash() = %08x, want c74f20a3", s.KeyHash())
	}
	msg, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil || string(msg) != want {
		t.Errorf("note.Sign(NewSigner(...)) = %q, %v, want %q", msg, err, want)
	}
	got, err := VerifierKey("PeterNeumann", priv.Public().(ed25519.PublicKey))
	if err != nil || got != vkey {
		t.Errorf("VerifierKey = %q, %v, want %q", got, err, vkey)
	}
}

func TestKeyErrors(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	for _, name := range []string{"", "has space", "has+plus"} {
		if _, err := NewSigner(name, priv); err == nil {
			t.Errorf("NewSigner(%q) = nil error, want one", name)
		}
		if _, err := VerifierKey(name, priv.Public().(ed25519.PublicKey)); err == nil {
			t.Errorf("VerifierKey(%q) = nil error, want one", name)
		}
	}
	if _, err := NewSigner("log", priv[:10]); err == nil {
		t.Errorf("NewSigner(short key) = nil error, want one")
	}
	if _, err := NewVerifier("log+00000000+AAAA"); err == nil {
		t.Errorf("NewVerifier(bad key) = nil error, want one")
	}
}

func TestSignOpenCheckpoint(t *testing.T) {
	s, v := testKey(t, testCheckpoint.Origin, 1)
	msg, err := SignCheckpoint(testCheckpoint, s)
	if err != nil {
		t.Fatalf("SignCheckpoint = %v", err)
	}
	if !strings.HasPrefix(msg, testCheckpoint.Body()+"\n— "+testCheckpoint.Origin+" ") {
		t.Errorf("SignCheckpoint = %q, want the body, a blank line and a signature", msg)
	}
	got, err := OpenCheckpoint(msg, v)
	if err != nil || got != testCheckpoint {
		t.Errorf("OpenCheckpoint = %+v, %v, want %+v", got, err, testCheckpoint)
	}

	otherS, otherV := testKey(t, testCheckpoint.Origin, 2)
	wrongNameS, wrongNameV := testKey(t, "other.test/log", 1)
	otherMsg, err := SignCheckpoint(testCheckpoint, otherS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SignCheckpoint(testCheckpoint, wrongNameS); err == nil {
		t.Errorf("SignCheckpoint(signer named %q) = nil error, want one", wrongNameS.Name())
	}
	// A checkpoint of another origin, signed by that origin's key.
	c := testCheckpoint
	c.Origin = wrongNameS.Name()
	wrongOrigin, err := SignCheckpoint(c, wrongNameS)
	if err != nil {
		t.Fatal(err)
	}
	// The body, changed after signing.
	tampered := strings.Replace(msg, "\n42\n", "\n43\n", 1)

	for _, tc := range []struct {
		name string
		msg  string
		v    note.Verifier
	}{
		{"tampered body", tampered, v},
		{"wrong key", otherMsg, v},
		{"verifier of other key", msg, otherV},
		{"origin is not the key's name", wrongOrigin, v},
		{"verifier of other name", msg, wrongNameV},
		{"unsigned", testCheckpoint.Body(), v},
		{"not a checkpoint", mustSign(t, "hello\n", s), v},
		{"nil verifier", msg, nil},
	} {
		if c, err := OpenCheckpoint(tc.msg, tc.v); err == nil {
			t.Errorf("%s: OpenCheckpoint = %+v, nil, want error", tc.name, c)
		}
	}
}

func mustSign(t *testing.T, text string, s note.Signer) string {
	t.Helper()
	msg, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return string(msg)
}

func TestCosign(t *testing.T) {
	logS, logV := testKey(t, testCheckpoint.Origin, 1)
	w1S, w1V := testKey(t, "witness.one", 11)
	w2S, w2V := testKey(t, "witness.two", 12)
	_, w1OtherV := testKey(t, "witness.one", 13) // witness.one's name, another key

	msg, err := SignCheckpoint(testCheckpoint, logS)
	if err != nil {
		t.Fatal(err)
	}
	cos1, err := Cosign(msg, logV, w1S)
	if err != nil {
		t.Fatalf("Cosign(witness.one) = %v", err)
	}
	cos12, err := Cosign(cos1, logV, w2S)
	if err != nil {
		t.Fatalf("Cosign(witness.two) = %v", err)
	}
	if c, err := OpenCheckpoint(cos12, logV); err != nil || c != testCheckpoint {
		t.Errorf("OpenCheckpoint(cosigned) = %+v, %v, want %+v", c, err, testCheckpoint)
	}

	for _, tc := range []struct {
		name      string
		msg       string
		witnesses []note.Verifier
		want      []string
	}{
		{"one of one", cos1, []note.Verifier{w1V}, []string{"witness.one"}},
		{"one known of two", cos12, []note.Verifier{w2V}, []string{"witness.two"}},
		{"two", cos12, []note.Verifier{w2V, w1V}, []string{"witness.one", "witness.two"}},
		{"not cosigned", msg, []note.Verifier{w1V}, nil},
		{"none known", cos1, nil, nil},
		{"wrong witness key", cos1, []note.Verifier{w1OtherV}, nil},
	} {
		c, got, err := WitnessedBy(tc.msg, logV, tc.witnesses)
		if err != nil || c != testCheckpoint || !slices.Equal(got, tc.want) {
			t.Errorf("%s: WitnessedBy = %+v, %q, %v, want %+v, %q, nil", tc.name, c, got, err, testCheckpoint, tc.want)
		}
	}

	// A bad signature by a known witness is an error, not ignored.
	i := strings.LastIndex(cos1, "— witness.one ")
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cos1[i+len("— witness.one "):]))
	if err != nil {
		t.Fatal(err)
	}
	sig[10] ^= 1 // in the signature, after the 4-byte key hash
	badSig := cos1[:i] + "— witness.one " + base64.StdEncoding.EncodeToString(sig) + "\n"
	if _, _, err := WitnessedBy(badSig, logV, []note.Verifier{w1V}); !isType[*note.InvalidSignatureError](err) {
		t.Errorf("WitnessedBy(bad witness signature) = %v, want a note.InvalidSignatureError", err)
	}
	// Cosign checks the log's signature first.
	otherLogS, _ := testKey(t, testCheckpoint.Origin, 2)
	forged, err := SignCheckpoint(testCheckpoint, otherLogS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Cosign(forged, logV, w1S); err == nil {
		t.Errorf("Cosign(checkpoint signed by another key) = nil error, want one")
	}
	if _, _, err := WitnessedBy(forged, logV, []note.Verifier{w1V}); err == nil {
		t.Errorf("WitnessedBy(checkpoint signed by another key) = nil error, want one")
	}
	if _, err := Cosign(msg, logV, logS); err == nil {
		t.Errorf("Cosign(witness = log key) = nil error, want one")
	}
}

func isType[E error](err error) bool {
	_, ok := errors.AsType[E](err)
	return ok
}
