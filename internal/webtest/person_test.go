package webtest

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// TestPersonAndTab: a Person has a cookie jar of its own, a Tab shares
// its person's; both record CSP violations; Screenshot saves the 1280×800
// viewport.
func TestPersonAndTab(t *testing.T) {
	srv := server(t)
	first := Browser(t)
	Open(t, first, srv.URL+"/redirect", "#landed")
	if c := Cookie(t, first, "c"); c != "v" {
		t.Fatalf("the first tab holds cookie %q, want v", c)
	}
	other := Person(t, first)
	Open(t, other, srv.URL+"/", "#title")
	if c := Cookie(t, other, "c"); c != "" {
		t.Errorf("another person holds the first's cookie %q", c)
	}
	second := Tab(t, first)
	Open(t, second, srv.URL+"/", "#title")
	if c := Cookie(t, second, "c"); c != "v" {
		t.Errorf("a second tab of the first person holds cookie %q, want v", c)
	}
	Open(t, other, srv.URL+"/strict", "#p")
	if v := CSPViolations(t, other); len(v) == 0 {
		t.Error("a Person's tab records no CSP violation on a page that breaks its policy")
	}
	Open(t, second, srv.URL+"/strict", "#p")
	if v := CSPViolations(t, second); len(v) == 0 {
		t.Error("a Tab records no CSP violation on a page that breaks its policy")
	}

	path := filepath.Join(t.TempDir(), "shot.png")
	Screenshot(t, second, path)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(raw))
	if err != nil || cfg.Width != 1280 || cfg.Height != 800 {
		t.Errorf("screenshot: %dx%d (%v), want a 1280x800 PNG", cfg.Width, cfg.Height, err)
	}
}
