package weblogin

import (
	"net/url"
	"strings"
)

// maxNextLen bounds the next parameter; it is stored with the pending
// login.
const maxNextLen = 2048

// safeNext reports whether next is a local path a login may land on. It
// refuses anything a browser could read as another origin: "//host" and
// "/\host" (which browsers treat alike), schemes, and control characters,
// which browsers strip from URLs ("/\t/host" becomes "//host").
func safeNext(next string) bool {
	if next == "" || len(next) > maxNextLen || next[0] != '/' {
		return false
	}
	if len(next) > 1 && (next[1] == '/' || next[1] == '\\') {
		return false
	}
	if strings.ContainsFunc(next, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
		return false
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return false
	}
	return true
}
