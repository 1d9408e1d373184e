package devidp

import (
	"bytes"
	"html/template"
	"net/http"
	"strings"
)

// pages are the few HTML pages a dev user sees. html/template escapes
// every value, user names and request parameters included.
var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"join": func(s []string) string { return strings.Join(s, ", ") },
}).Parse(`
{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.}}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;color:#222}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.5rem .75rem;border-radius:4px}
.error{background:#f8d7da;border:1px solid #d08080;padding:.5rem .75rem;border-radius:4px}
button{display:block;width:100%;text-align:left;margin:.5rem 0;padding:.6rem .75rem;font:inherit;cursor:pointer}
small{color:#666}code{font-size:.9em}
</style></head><body><main>{{end}}
{{define "foot"}}</main></body></html>{{end}}

{{define "warning"}}<p class="warn">Development issuer <code>{{.}}</code>: anyone who can reach it
can sign in as any of its users. Never use it outside development.</p>{{end}}

{{define "authorize"}}{{template "head" "Dev sign-in"}}
<h1>Dev sign-in</h1>
{{template "warning" .Issuer}}
<p>Client <code>{{.ClientID}}</code> asks you to sign in. Pick a dev user:</p>
{{with .Error}}<p class="error">{{.}}</p>{{end}}
<form method="post" action="{{.Action}}">
{{range .Params}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}{{range .Users}}<button type="submit" name="email" value="{{.Email}}"><strong>{{or .Name .Email}}</strong> <small>{{.Email}}{{with .Groups}} · {{join .}}{{end}}</small></button>
{{end}}<button type="submit" name="action" value="deny">Cancel</button>
</form>
{{template "foot"}}{{end}}

{{define "device"}}{{template "head" "Dev device sign-in"}}
<h1>Dev device sign-in</h1>
{{template "warning" .Issuer}}
{{with .Error}}<p class="error">{{.}}</p>{{end}}
{{with .ClientID}}<p>Client <code>{{.}}</code> asks to sign in on a device{{with $.Scope}} with scope <code>{{.}}</code>{{end}}; the request is {{$.State}}.</p>{{end}}
<form method="post" action="{{.Action}}">
<p><label>Code shown on your device<br><input name="user_code" value="{{.UserCode}}" required autocomplete="off" spellcheck="false" placeholder="XXXX-XXXX"></label></p>
<p>Sign in as:</p>
{{range $i, $u := .Users}}<p><label><input type="radio" name="email" value="{{$u.Email}}"{{if eq $i 0}} checked{{end}}> <strong>{{or $u.Name $u.Email}}</strong> <small>{{$u.Email}}{{with $u.Groups}} · {{join .}}{{end}}</small></label></p>
{{end}}<button type="submit" name="action" value="approve">Approve</button>
<button type="submit" name="action" value="deny">Deny</button>
</form>
{{template "foot"}}{{end}}

{{define "message"}}{{template "head" .Title}}
<h1>{{.Title}}</h1>
{{with .Issuer}}{{template "warning" .}}{{end}}
<p{{if .IsError}} class="error"{{end}}>{{.Message}}</p>
{{template "foot"}}{{end}}
`))

type pageUser struct {
	Email, Name string
	Groups      []string
}

type pageParam struct{ Name, Value string }

type authorizePage struct {
	Issuer, ClientID, Action, Error string
	Params                          []pageParam
	Users                           []pageUser
}

type devicePage struct {
	Issuer, Action, Error     string
	UserCode, ClientID, Scope string
	State                     string
	Users                     []pageUser
}

type messagePage struct {
	Issuer, Title, Message string
	IsError                bool
}

func (is *issuer) pageUsers() []pageUser {
	out := make([]pageUser, len(is.users))
	for i, u := range is.users {
		out[i] = pageUser{Email: u.email, Name: u.name, Groups: u.groups}
	}
	return out
}

func (is *issuer) loginPage(w http.ResponseWriter, status int, ar authRequest, errMsg string) {
	vals := map[string]string{
		"client_id": ar.clientID, "redirect_uri": ar.redirectURI, "response_type": ar.responseType,
		"scope": ar.scope, "state": ar.state, "code_challenge": ar.challenge,
		"code_challenge_method": ar.method, "nonce": ar.nonce,
	}
	page := authorizePage{
		Issuer: is.url, ClientID: ar.clientID, Action: is.path + "/authorize", Error: errMsg,
		Users: is.pageUsers(),
	}
	for _, name := range authParams {
		if v := vals[name]; v != "" {
			page.Params = append(page.Params, pageParam{name, v})
		}
	}
	is.render(w, status, "authorize", page)
}

func (is *issuer) devicePage(w http.ResponseWriter, status int, page devicePage) {
	page.Issuer, page.Action, page.Users = is.url, is.path+"/device", is.pageUsers()
	is.render(w, status, "device", page)
}

func (is *issuer) errorPage(w http.ResponseWriter, status int, title, msg string) {
	is.render(w, status, "message", messagePage{Issuer: is.url, Title: title, Message: msg, IsError: true})
}

func (is *issuer) messagePage(w http.ResponseWriter, status int, title, msg string) {
	is.render(w, status, "message", messagePage{Issuer: is.url, Title: title, Message: msg})
}

func (is *issuer) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, "render page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// Pages carry state and PKCE challenges in forms: keep them out of
	// referrers and frames. No form-action directive: browsers apply it
	// to the redirect that follows the form, which goes to the client.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
