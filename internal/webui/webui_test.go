package webui

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestTemplatesCarryNoScriptOrInlineStyle: the CSP would block them, and
// no template may mark a string safe (template.HTML and friends would
// bypass escaping).
func TestTemplatesCarryNoScriptOrInlineStyle(t *testing.T) {
	banned := regexp.MustCompile(`(?i)<script|<style|\sstyle=|\son[a-z]+=|javascript:|\bsafe[A-Z]|template\.HTML`)
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil || len(names) == 0 {
		t.Fatalf("no templates: %v", err)
	}
	for _, n := range names {
		raw, _ := fs.ReadFile(templateFS, n)
		// The one script a page may load: the broker's own status file.
		page := strings.ReplaceAll(string(raw), `<script src="{{statusjs}}" defer></script>`, "")
		if m := banned.FindString(page); m != "" {
			t.Errorf("%s contains %q", n, m)
		}
	}
	src, err := os.ReadFile("webui.go")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(src), "template.HTML(") || strings.Contains(string(src), "template.URL(") {
		t.Error("webui.go converts a string to a trusted template type")
	}
}

// TestRender: a page carries the strict headers and escapes its data.
func TestRender(t *testing.T) {
	r := Must()
	w := httptest.NewRecorder()
	err := r.Render(w, http.StatusOK, "error", Page{
		Title: `<b>t</b>`, User: &User{Name: `"><script>x</script>`, Issuer: "acme", Roles: []string{"approver"}}, CSRF: "tok",
		Data: map[string]any{"Heading": "Refused", "Code": "c", "Message": `<img src=x onerror=alert(1)>`, "Back": "javascript:alert(1)"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Header().Get("Content-Security-Policy"); got != CSP {
		t.Errorf("CSP = %q, want %q", got, CSP)
	}
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
		if got := w.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	body := w.Body.String()
	for _, bad := range []string{"<script>x", "<img src=x", `href="javascript:`, "<b>t</b>"} {
		if strings.Contains(body, bad) {
			t.Errorf("rendered page contains %q unescaped", bad)
		}
	}
	if !strings.Contains(body, `name="csrf" value="tok"`) || !strings.Contains(body, `<meta name="viewport"`) {
		t.Error("the layout lacks the sign-out form's CSRF token or the viewport")
	}
	if err := r.Render(httptest.NewRecorder(), http.StatusOK, "nope", Page{}); err == nil {
		t.Error("Render of an unknown page succeeded")
	}
}

// TestServeStatic: the hashed stylesheet is served for long caching; no
// other name is.
func TestServeStatic(t *testing.T) {
	for path, want := range map[string]int{CSSPath(): 200, JSPath(): 200, StaticPrefix + "app.css": 404, StaticPrefix + "status.js": 404, StaticPrefix + "../webui.go": 404} {
		w := httptest.NewRecorder()
		ServeStatic(w, httptest.NewRequest(http.MethodGet, "http://x"+path, nil))
		if w.Code != want {
			t.Errorf("GET %s = %d, want %d", path, w.Code, want)
		}
	}
}
