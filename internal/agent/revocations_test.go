package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRevocationsSurviveReload: a revocation is on disk once add returns,
// a fresh load (an agent restart) still refuses the grant, and entries go
// once their grant has expired.
func TestRevocationsSurviveReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), revocationsFile)
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	r, err := loadRevocations(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.add("g-live", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	if err := r.add("g-short", now.Add(time.Minute), now); err != nil {
		t.Fatal(err)
	}
	if err := r.add("g-unknown-expiry", time.Time{}, now); err != nil {
		t.Fatal(err)
	}
	r2, err := loadRevocations(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"g-live", "g-short", "g-unknown-expiry"} {
		if !r2.has(id) {
			t.Errorf("after reload has(%q) = false, want true", id)
		}
	}
	if r2.has("g-other") {
		t.Error(`has("g-other") = true, want false`)
	}
	// Two hours later g-short and g-live have expired; a grant without a
	// known expiry is kept longer than any grant lasts.
	if err := r2.add("g-new", time.Time{}, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	r3, err := loadRevocations(path)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"g-live": false, "g-short": false, "g-unknown-expiry": true, "g-new": true} {
		if got := r3.has(id); got != want {
			t.Errorf("after expiry has(%q) = %v, want %v", id, got, want)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("revocation file mode = %v, %v; want 0600", fi.Mode(), err)
	}
}

// TestRevocationsFailClosed: a damaged list stops the agent at start,
// saying what to do, rather than forgetting revocations.
func TestRevocationsFailClosed(t *testing.T) {
	for _, tt := range []struct{ name, body string }{
		{"truncated", `{"version": 1, "revoked": {"g-1": "2030-01-01T`},
		{"empty", ``},
		{"wrong version", `{"version": 2, "revoked": {}}`},
		{"bad grant ID", `{"version": 1, "revoked": {"g'; DROP": "2030-01-01T00:00:00Z"}}`},
		{"no expiry", `{"version": 1, "revoked": {"g-1": "0001-01-01T00:00:00Z"}}`},
		{"unknown field", `{"version": 1, "revoked": {}, "extra": 1}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), revocationsFile)
			if err := os.WriteFile(path, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadRevocations(path)
			if err == nil || !strings.Contains(err.Error(), "revoked grants list is damaged") {
				t.Errorf("loadRevocations(%s) = %v, want an error saying the list is damaged", tt.name, err)
			}
		})
	}
	// And the agent itself refuses to start on it.
	dir := t.TempDir()
	if err := os.WriteFile(revocationsPath(dir), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{StateDir: dir}); err == nil || !strings.Contains(err.Error(), "revoked grants list is damaged") {
		t.Errorf("New with a damaged revocation list = %v, want a refusal to start", err)
	}
}

// TestRevocationsBounded: the list holds at most maxRevocations unexpired
// grants; one more is refused in memory and reported, not silently lost.
func TestRevocationsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), revocationsFile)
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	r, err := loadRevocations(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxRevocations {
		r.m[fmt.Sprintf("g-%d", i)] = now.Add(time.Hour)
	}
	err = r.add("g-last", now.Add(time.Hour), now)
	if !errors.Is(err, ErrRevocationsFull) {
		t.Fatalf("add beyond the bound = %v, want ErrRevocationsFull", err)
	}
	if !r.has("g-last") {
		t.Error("a revocation that could not be saved is not refused in memory")
	}
	// Once the earlier grants expired there is room again, and the file
	// stays small.
	if err := r.add("g-later", now.Add(3*time.Hour), now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() > 4096 {
		t.Errorf("revocation file after expiry: %v bytes, %v; want small", fi.Size(), err)
	}
}
