package webtest

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

const testPage = `<!doctype html><html><head><title>webtest</title></head><body>
<h1 id="title">Hello</h1>
<form method="post" action="/echo"><label>Name <input id="name" name="name" value="old"></label><button id="send">Send</button></form>
<a id="next" href="/redirect">next</a>
</body></html>`

// server serves a test page, a form echo and a redirect on loopback.
func server(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'")
		w.Header().Set("X-Test", "one")
		fmt.Fprint(w, testPage)
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><p id="echo">%s</p>`, html.EscapeString(r.FormValue("name")))
	})
	mux.HandleFunc("GET /redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/landed", http.StatusFound)
	})
	mux.HandleFunc("GET /landed", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "c", Value: "v", HttpOnly: true, Path: "/"})
		w.Header().Set("X-Landed", "yes")
		fmt.Fprint(w, `<!doctype html><p id="landed">landed</p>`)
	})
	mux.HandleFunc("GET /strict", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'")
		fmt.Fprint(w, `<!doctype html><html><head><style>p{color:red}</style></head><body>
<p id="p" style="margin:0">strict</p><script>document.title = "ran"</script></body></html>`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestHelpers drives the test page through every helper.
func TestHelpers(t *testing.T) {
	srv := server(t)
	tab := Browser(t)

	res := Open(t, tab, srv.URL+"/", "#title")
	if got := Header(res, "content-security-policy"); got != "default-src 'none'" {
		t.Errorf("Header(Content-Security-Policy) = %q, want the page's", got)
	}
	if got := Header(res, "X-TEST"); got != "one" {
		t.Errorf("Header(X-TEST) = %q, want one (names match in any case)", got)
	}
	if got := Header(res, "X-Absent"); got != "" {
		t.Errorf("Header(X-Absent) = %q, want empty", got)
	}
	if got := Text(t, tab, "#title"); got != "Hello" {
		t.Errorf("Text(#title) = %q, want Hello", got)
	}
	if got := Count(t, tab, "input"); got != 1 {
		t.Errorf("Count(input) = %d, want 1", got)
	}

	Fill(t, tab, "#name", "")
	if got := step(t, tab, "read #name", chromedp.Value(chromedp.CSS("#name"))); got != "" {
		t.Errorf("after Fill with \"\", #name holds %q", got)
	}
	Fill(t, tab, "#name", "Ada <b>")
	ClickNavigate(t, tab, "#send")
	if got := Text(t, tab, "#echo"); got != "Ada <b>" {
		t.Errorf("after Fill and submit, the server saw %q, want %q (the old value replaced)", got, "Ada <b>")
	}

	Open(t, tab, srv.URL+"/", "#next")
	res = ClickNavigate(t, tab, "#next")
	if got := Header(res, "X-Landed"); got != "yes" || !strings.HasSuffix(res.URL, "/landed") {
		t.Errorf("ClickNavigate through a redirect returned %s with X-Landed %q, want /landed's response", res.URL, got)
	}
	if got := Location(t, tab); got != srv.URL+"/landed" {
		t.Errorf("Location = %q, want %q", got, srv.URL+"/landed")
	}
	if got := Cookie(t, tab, "c"); got != "v" {
		t.Errorf("Cookie(c) = %q, want v (HttpOnly cookies are read too)", got)
	}
}

// TestStaysOnLoopback: the browser reaches the loopback pages under test,
// by address and by the name localhost, and nothing else — a request for
// any other host, named or by address, fails at the black-hole proxy
// instead of leaving the machine (without the proxy flag the first fails
// with a DNS error, the others with a refused or unreachable address,
// and this test fails).
func TestStaysOnLoopback(t *testing.T) {
	srv := server(t)
	tab := Browser(t)
	Open(t, tab, srv.URL+"/", "#title")
	Open(t, tab, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)+"/", "#title")

	for _, url := range []string{"http://tether-webtest.example/", "http://192.0.2.1/", "https://[2001:db8::1]/"} {
		ctx, cancel := context.WithTimeout(tab, ActionTimeout)
		_, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
		cancel()
		if err == nil || !strings.Contains(err.Error(), "ERR_PROXY_CONNECTION_FAILED") {
			t.Errorf("open %s: %v, want net::ERR_PROXY_CONNECTION_FAILED (the request must go to the black-hole proxy)", url, err)
		}
	}
}

// TestCSPViolations: the recorder sees each inline style, style attribute
// and script a strict policy refuses, and nothing on a page that keeps to
// its policy.
func TestCSPViolations(t *testing.T) {
	srv := server(t)
	tab := Browser(t)
	Open(t, tab, srv.URL+"/", "#title")
	if got := CSPViolations(t, tab); len(got) != 0 {
		t.Errorf("CSPViolations on a page within its policy = %q, want none", got)
	}
	Open(t, tab, srv.URL+"/strict", "#p")
	got := strings.Join(CSPViolations(t, tab), "\n")
	t.Logf("violations on /strict:\n%s", got)
	for _, want := range []string{"style-src-elem refused inline", "style-src-attr refused inline", "script-src-elem refused inline"} {
		if !strings.Contains(got, want) {
			t.Errorf("CSPViolations = %q, want one with %q", got, want)
		}
	}
	if title, _ := chromedp.Run(tab, chromedp.Title()); title == "ran" {
		t.Errorf("the inline script ran despite default-src 'none'")
	}
}

// TestArtifacts: what a failed test leaves behind is a real PNG of the page
// and its HTML, under $TETHER_TEST_ARTIFACTS when set.
func TestArtifacts(t *testing.T) {
	root := t.TempDir()
	t.Setenv(ArtifactsEnv, root)
	srv := server(t)
	tab := Browser(t)
	Open(t, tab, srv.URL+"/", "#title")
	saveArtifacts(t, tab)

	dirs, _ := filepath.Glob(filepath.Join(root, t.Name()+"-*"))
	if len(dirs) != 1 {
		t.Fatalf("artifact directories under %s: %q, want one named after the test", root, dirs)
	}
	raw, err := os.ReadFile(filepath.Join(dirs[0], "page.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("page.png: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("page.png is %v, want a page-sized picture", b)
	}
	pageHTML, err := os.ReadFile(filepath.Join(dirs[0], "page.html"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(pageHTML), `<h1 id="title">Hello</h1>`) {
		t.Errorf("page.html = %s, want the page's HTML", pageHTML)
	}
}
