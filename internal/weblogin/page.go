package weblogin

import (
	"bytes"
	"html/template"
	"net/http"
	"net/url"
)

// page is what the sign-in pages show: a title, what happened, and links
// to go on (try again, pick a provider).
type page struct {
	Title   string
	Message string
	Detail  string
	Links   []link
}

type link struct {
	URL  string
	Text string
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · Tether</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;line-height:1.5}small{color:#555}</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{with .Detail}}<p><small>{{.}}</small></p>
{{end}}{{range .Links}}<p><a href="{{.URL}}">{{.Text}}</a></p>
{{end}}</body>
</html>
`))

// writePage renders p with status. The page loads nothing, may not be
// framed and sends no Referer: the callback URL carries the code.
func writePage(w http.ResponseWriter, status int, p page) {
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, p); err != nil {
		// The template is fixed and its data plain strings; this does not
		// happen.
		http.Error(w, p.Title, status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// loginURL is the local URL that starts a login at provider (empty for
// the default) landing on next.
func loginURL(provider, next string) string {
	q := url.Values{}
	if provider != "" {
		q.Set("issuer", provider)
	}
	if next != "" && next != DefaultNext {
		q.Set("next", next)
	}
	if len(q) == 0 {
		return LoginPath
	}
	return LoginPath + "?" + q.Encode()
}
