// Package webui renders the broker's web console: server-side
// html/template pages and one stylesheet, all embedded in the binary.
//
// The pages carry one small script of the broker's own ([JSPath]), which
// long-polls a request's status; every page works without it. Every page
// is answered with the same strict headers ([SetHeaders]): a
// Content-Security-Policy that allows only the broker's own stylesheet,
// script file, images and fetches, and forms posting back to the broker
// — no inline script or style, no eval — no framing, no referrer, no
// caching. Untrusted strings
// reach the pages only through html/template's contextual escaping; no
// template takes template.HTML.
//
// The package knows nothing of who may see what: the broker authorizes
// each page against its API's table and hands the page its data.
package webui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

// CSP is the Content-Security-Policy of every page: nothing but the
// broker's own stylesheet, script files, images and fetches (the status
// script's long poll), forms that post back to the broker, no framing,
// no <base>. No inline script or style anywhere, no eval.
const CSP = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// StaticPrefix is the path under which [Handler.Static] serves the
// stylesheet.
const StaticPrefix = "/ui/static/"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/app.css
var css []byte

//go:embed static/status.js
var statusJS []byte

// cssName is the stylesheet's file name, with its content hash: a new
// build's stylesheet has a new URL, so browsers may cache it for good.
var cssName = func() string {
	sum := sha256.Sum256(css)
	return "app." + hex.EncodeToString(sum[:6]) + ".css"
}()

// CSSPath is the stylesheet's path, as pages link it.
func CSSPath() string { return StaticPrefix + cssName }

// jsName is the status script's file name, with its content hash.
var jsName = func() string {
	sum := sha256.Sum256(statusJS)
	return "status." + hex.EncodeToString(sum[:6]) + ".js"
}()

// JSPath is the status script's path: it long-polls the status of the
// request whose page loads it, and updates #state and #waiting in place.
func JSPath() string { return StaticPrefix + jsName }

// SetHeaders sets the security headers every page carries.
func SetHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
}

// User is who is signed in, as the header shows them.
type User struct {
	Name   string // e-mail or subject
	Issuer string // the identity provider's name
	Tenant string // empty for vendor staff
	Roles  []string
}

// NavItem is one link of the navigation.
type NavItem struct {
	Path    string
	Text    string
	Current bool
}

// Page is what the layout shows around a page's own content.
type Page struct {
	Title  string
	User   *User  // nil when signed out
	CSRF   string // the session's token, for the sign-out form and every POST form
	Nav    []NavItem
	Notice string // a one-line message above the content (after an action)
	// Data is the page's own content.
	Data any
}

// Renderer renders the console's pages.
type Renderer struct {
	pages map[string]*template.Template
}

var funcs = template.FuncMap{
	"join": strings.Join,
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04 MST")
	},
	"rfc3339":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"css":      CSSPath,
	"statusjs": JSPath,
}

// New parses the embedded templates: the layout with each page.
func New() (*Renderer, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("webui: list templates: %w", err)
	}
	r := &Renderer{pages: map[string]*template.Template{}}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("webui: parse %s: %w", n, err)
		}
		r.pages[base] = t
	}
	return r, nil
}

// Must is New, panicking on error: the templates are part of the binary,
// so an error is a bug a test catches.
func Must() *Renderer {
	r, err := New()
	if err != nil {
		panic(err)
	}
	return r
}

// Render writes page name with the layout, status and the security
// headers. A template that fails to execute is answered 500 with a
// plain message (the page is rendered into a buffer first, so nothing
// half-written reaches the browser).
func (r *Renderer) Render(w http.ResponseWriter, status int, name string, p Page) error {
	SetHeaders(w)
	t, ok := r.pages[name]
	if !ok {
		http.Error(w, "internal error: no such page", http.StatusInternalServerError)
		return fmt.Errorf("webui: no page %q", name)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", p); err != nil {
		http.Error(w, "internal error; the broker log has details", http.StatusInternalServerError)
		return fmt.Errorf("webui: render %s: %w", name, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// ServeStatic serves the stylesheet at [CSSPath] and the status script
// at [JSPath], cacheable for a year (their names change with their
// content); any other name is 404.
func ServeStatic(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", CSP)
	var body []byte
	switch r.URL.Path {
	case CSSPath():
		h.Set("Content-Type", "text/css; charset=utf-8")
		body = css
	case JSPath():
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		body = statusJS
	default:
		h.Set("Cache-Control", "no-store")
		http.NotFound(w, r)
		return
	}
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	_, _ = w.Write(body)
}
