// Package webtest drives a real browser — Debian's headless Chromium, over
// the DevTools protocol with chromedp — for tests of the broker's web
// console. Every request the browser makes stays on loopback; a test that
// fails leaves a full-page screenshot and the page's HTML behind. Only tests
// import it (internal/guardrails checks that no binary links it).
//
// The helpers take the test and the tab's context and stop the test on an
// error, so a test reads as the steps a person takes:
//
//	tab := webtest.Browser(t)
//	webtest.Open(t, tab, url+"/ui/", "h1")
//	webtest.Click(t, tab, `a[href*="issuer=acme"]`)
package webtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/tetherhq/tether/internal/testenv"
)

// ActionTimeout bounds each step a helper takes (a navigation, waiting for
// a selector, a click), so that a page that never shows what a test waits
// for fails that test in seconds, naming the step, instead of hanging
// until go test's own timeout.
const ActionTimeout = 15 * time.Second

// startTimeout bounds the browser's start.
const startTimeout = 30 * time.Second

// ArtifactsEnv names the environment variable holding the directory where
// failed tests leave their screenshots and HTML (CI keeps it). Unset, they
// go to a new directory under the system's temporary directory: t.TempDir
// is removed when the test ends, failed or not, and would take them along.
const ArtifactsEnv = "TETHER_TEST_ARTIFACTS"

// blackholeProxy is where the browser sends every request for a
// non-loopback address: nothing listens on port 1, so such a request fails
// at once (net::ERR_PROXY_CONNECTION_FAILED) instead of leaving the
// machine, and the browser resolves no host name itself. Chromium bypasses
// the proxy for loopback (localhost, 127.0.0.0/8, [::1]) unless told
// otherwise, so the pages under test are reached directly.
const blackholeProxy = "http://127.0.0.1:1"

// ExecPath returns the browser to run: $TETHER_CHROMIUM when set, else the
// first of chromium, chromium-browser, google-chrome on $PATH.
func ExecPath() (string, error) {
	if p := os.Getenv("TETHER_CHROMIUM"); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("TETHER_CHROMIUM=%s: %w", p, err)
		}
		return path, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium on $PATH (make deps installs Debian's chromium as root; or set TETHER_CHROMIUM)")
}

// Flags are the command-line flags the browser runs with, beyond
// chromedp's defaults: headless, no sandbox (tests run as root in CI, where
// Chromium refuses to start with one; the pages are the test's own), no GPU,
// and nothing that phones home — no background networking, component
// updates, sync or QUIC — with every non-loopback request sent to a proxy
// that is not there.
func Flags() []chromedp.ExecAllocatorOption {
	return []chromedp.ExecAllocatorOption{
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.ProxyServer(blackholeProxy),
		chromedp.WindowSize(1280, 900),
	}
}

// Browser starts a headless browser with an empty profile in the test's
// temporary directory and returns the context of its first tab; the
// browser stops when the test ends. If the test has failed by then, a
// full-page screenshot (PNG) and the page's HTML are saved first (see
// [ArtifactsEnv]) and their paths logged. Without a browser on the machine
// the test skips, or fails under CI=true.
func Browser(t testing.TB) context.Context {
	t.Helper()
	path, err := ExecPath()
	testenv.Require(t, err == nil, "%v", err)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], Flags()...)
	opts = append(opts, chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tab, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(format string, args ...any) {
		t.Logf("chromedp: "+format, args...)
	}))
	t.Cleanup(cancelAlloc)
	t.Cleanup(cancelTab)

	// The first action starts the browser: give it a context with no
	// deadline (a deadline here would end the browser with it) and bound
	// the wait from outside.
	start := time.Now()
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(tab) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start %s: %v", path, err)
		}
	case <-time.After(startTimeout):
		cancelTab()
		t.Fatalf("start %s: not up within %s", path, startTimeout)
	}
	t.Logf("webtest: %s up in %s", path, time.Since(start).Round(time.Millisecond))
	step(t, tab, "install the CSP violation recorder", func(ctx context.Context, tg *chromedp.Target) (page.AddScriptToEvaluateOnNewDocumentResult, error) {
		return cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder})
	})

	// Registered last, so it runs first: the tab is still open.
	t.Cleanup(func() {
		if t.Failed() {
			saveArtifacts(t, tab)
		}
	})
	return tab
}

// cspRecorder runs in every document before the page's own content (the
// DevTools protocol injects it, so the page's Content-Security-Policy does
// not stop it) and records each violation of that policy the browser
// reports.
const cspRecorder = `(() => {
	const seen = [];
	Object.defineProperty(window, "__webtestCSPViolations", {value: seen});
	document.addEventListener("securitypolicyviolation", e => seen.push(
		e.effectiveDirective + " refused " + (e.blockedURI || "?") +
		(e.sourceFile ? " at " + e.sourceFile + ":" + e.lineNumber : "") +
		(e.sample ? " (" + e.sample + ")" : "")));
})()`

// CSPViolations returns what the page tab shows did that its
// Content-Security-Policy refused, as the browser reported it since the
// page loaded: "<directive> refused <what> at <where> (<sample>)", where
// what is "inline", "eval" or a URL. A page that works as designed has
// none: a refused stylesheet or script is a page that looks or works
// other than its author saw.
func CSPViolations(t testing.TB, tab context.Context) []string {
	t.Helper()
	// Reports are queued as tasks: let the page's queue run first.
	js := `new Promise(r => setTimeout(() => r(Array.from(window.__webtestCSPViolations || [])), 0))`
	return step(t, tab, "read the CSP violations", chromedp.Evaluate[[]string](js, chromedp.EvalAwaitPromise))
}

// saveArtifacts writes a full-page screenshot and the page's HTML of tab
// and logs where.
func saveArtifacts(t testing.TB, tab context.Context) {
	t.Helper()
	dir, err := artifactsDir(t)
	if err != nil {
		t.Logf("webtest: no artifacts saved: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(tab, ActionTimeout)
	defer cancel()
	if url, err := chromedp.Run(ctx, chromedp.Location()); err == nil {
		t.Logf("webtest: the page at failure: %s", url)
	}
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
		t.Logf("webtest: screenshot: %v", err)
	} else if err := os.WriteFile(filepath.Join(dir, "page.png"), png, 0o644); err != nil {
		t.Logf("webtest: save screenshot: %v", err)
	}
	if html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html"))); err != nil {
		t.Logf("webtest: page HTML: %v", err)
	} else if err := os.WriteFile(filepath.Join(dir, "page.html"), []byte(html), 0o644); err != nil {
		t.Logf("webtest: save page HTML: %v", err)
	}
	t.Logf("webtest: screenshot and HTML of the failed test's page in %s", dir)
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// artifactsDir makes a new directory for t's artifacts.
func artifactsDir(t testing.TB) (string, error) {
	name := unsafeName.ReplaceAllString(t.Name(), "_")
	root := os.Getenv(ArtifactsEnv)
	if root == "" {
		return os.MkdirTemp("", "tether-artifacts-"+name+"-")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("artifacts directory: %w", err)
	}
	return os.MkdirTemp(root, name+"-")
}

// step runs one bounded step on tab, failing t with what was attempted.
func step[T any](t testing.TB, tab context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, ActionTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// Open loads url in tab, waits until an element matching the CSS selector
// sel is visible (none when sel is empty) and returns the main document's
// response (after redirects), whose headers [Header] reads.
func Open(t testing.TB, tab context.Context, url, sel string) *network.Response {
	t.Helper()
	res := step(t, tab, "open "+url, chromedp.NavigateResponse(url))
	if sel != "" {
		WaitVisible(t, tab, sel)
	}
	return res
}

// WaitVisible waits until an element matching the CSS selector sel is
// visible.
func WaitVisible(t testing.TB, tab context.Context, sel string) {
	t.Helper()
	step(t, tab, "wait for "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// Click clicks the first element matching the CSS selector sel, once it is
// visible, and does not wait for anything it causes.
func Click(t testing.TB, tab context.Context, sel string) {
	t.Helper()
	step(t, tab, "click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

// ClickNavigate clicks the first element matching sel, a link or a
// submit button, waits for the page it leads to (after redirects) to load
// and returns that page's response.
func ClickNavigate(t testing.TB, tab context.Context, sel string) *network.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, ActionTimeout)
	defer cancel()
	res, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("browser: click %s and load the next page: %v", sel, err)
	}
	return res
}

// Fill sets the value of the form field matching sel, once it is
// visible, and fires its input and change events as typing would.
// (chromedp's SetValue cannot set an empty value: v0.23.1 drops the empty
// argument and the field reads "undefined".)
func Fill(t testing.TB, tab context.Context, sel, value string) {
	t.Helper()
	WaitVisible(t, tab, sel)
	js := fmt.Sprintf(`(() => {
		const e = document.querySelector(%s);
		e.value = %s;
		e.dispatchEvent(new Event("input", {bubbles: true}));
		e.dispatchEvent(new Event("change", {bubbles: true}));
		return e.value;
	})()`, jsString(sel), jsString(value))
	if got := step(t, tab, "fill "+sel, chromedp.Evaluate[string](js)); got != value {
		t.Fatalf("browser: fill %s with %q: the field holds %q", sel, value, got)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

// Text returns the visible text of the first element matching sel.
func Text(t testing.TB, tab context.Context, sel string) string {
	t.Helper()
	return step(t, tab, "read the text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

// HTML returns the outer HTML of the first element matching sel, as the
// browser holds it now.
func HTML(t testing.TB, tab context.Context, sel string) string {
	t.Helper()
	return step(t, tab, "read the HTML of "+sel, chromedp.OuterHTML(chromedp.CSS(sel)))
}

// Attr returns the attribute name of the first element matching sel, as
// the server sent it or a script set it, or "" when absent. The element
// need not be visible (a hidden input).
func Attr(t testing.TB, tab context.Context, sel, name string) string {
	t.Helper()
	return step(t, tab, "read the attributes of "+sel, chromedp.Attributes(chromedp.CSS(sel)))[name]
}

// Eval evaluates the JavaScript expression js in the page and returns its
// value as a T (decoded from JSON).
func Eval[T any](t testing.TB, tab context.Context, js string) T {
	t.Helper()
	return step(t, tab, "evaluate "+js, chromedp.Evaluate[T](js))
}

// Count returns how many elements match sel now, without waiting.
func Count(t testing.TB, tab context.Context, sel string) int {
	t.Helper()
	js := fmt.Sprintf("document.querySelectorAll(%s).length", jsString(sel))
	return step(t, tab, "count "+sel, chromedp.Evaluate[int](js))
}

// Location returns the URL of the page tab shows.
func Location(t testing.TB, tab context.Context) string {
	t.Helper()
	return step(t, tab, "read the location", chromedp.Location())
}

// Cookie returns the value of the cookie name the browser would send to
// the page it shows, HttpOnly ones included, or "" when it has none.
func Cookie(t testing.TB, tab context.Context, name string) string {
	t.Helper()
	res := step(t, tab, "read cookies", func(ctx context.Context, tg *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{})
	})
	for _, c := range res.Cookies {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// Header returns the value of a response header, matched case-insensitively
// (the DevTools protocol passes names as the server spelt them, or in lower
// case over HTTP/2), or "" when absent. Repeated headers arrive joined by
// newlines.
func Header(res *network.Response, name string) string {
	if res == nil {
		return ""
	}
	for k, v := range res.Headers {
		if strings.EqualFold(k, name) {
			return fmt.Sprint(v)
		}
	}
	return ""
}

// Person returns a tab in a new browser context of tab's browser, like a
// new incognito window: a cookie jar, storage and cache of its own, so
// that one test can sign several people in at once. Like [Browser]'s tab
// it records CSP violations and, if the test fails, leaves its screenshot
// and HTML behind. It closes when the test ends.
func Person(t testing.TB, tab context.Context) context.Context {
	t.Helper()
	return newTab(t, tab, "a new browser context", chromedp.WithNewBrowserContext())
}

// Tab returns another tab in tab's browser context: the same cookies, so
// the same signed-in person, with a page of its own (a query left running
// there while the person acts in the first tab). It closes when the test
// ends.
func Tab(t testing.TB, tab context.Context) context.Context {
	t.Helper()
	return newTab(t, tab, "a new tab")
}

// newTab opens a tab as opts say, installs the CSP violation recorder and
// saves the artifacts of a failed test.
func newTab(t testing.TB, parent context.Context, what string, opts ...chromedp.ContextOption) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(parent, opts...)
	t.Cleanup(cancel)
	// The first action creates the target: no deadline on it (one would
	// close the tab with it); the wait is bounded from outside.
	created := make(chan error, 1)
	go func() { created <- chromedp.Do(tab) }()
	select {
	case err := <-created:
		if err != nil {
			t.Fatalf("browser: open %s: %v", what, err)
		}
	case <-time.After(ActionTimeout):
		cancel()
		t.Fatalf("browser: open %s: not open within %s", what, ActionTimeout)
	}
	step(t, tab, "install the CSP violation recorder", func(ctx context.Context, tg *chromedp.Target) (page.AddScriptToEvaluateOnNewDocumentResult, error) {
		return cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder})
	})
	t.Cleanup(func() {
		if t.Failed() {
			saveArtifacts(t, tab)
		}
	})
	return tab
}

// Screenshot saves what tab shows in a laptop's viewport (1280×800 CSS
// pixels, the top of the page) as a PNG file at path.
func Screenshot(t testing.TB, tab context.Context, path string) {
	t.Helper()
	step(t, tab, "set a 1280×800 viewport", chromedp.EmulateViewport(1280, 800))
	png := step(t, tab, "take a screenshot", chromedp.CaptureScreenshot())
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("save the screenshot: %v", err)
	}
}
