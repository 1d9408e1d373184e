package sqlguard

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// denial is a reason to refuse a statement. The lexer and parser panic with
// it and Check recovers it; any other panic is an internal error.
type denial struct{ reason string }

func deny(format string, args ...any) *denial {
	return &denial{reason: fmt.Sprintf(format, args...)}
}

type tokKind uint8

const (
	tEOF    tokKind = iota
	tWord           // a bare word: identifier or keyword
	tQIdent         // a quoted identifier; val is unquoted
	tString         // a string literal; val is the decoded value
	tNumber         // a number; val is its text
	tPunct          // an operator or punctuation; val is its text
)

type token struct {
	kind tokKind
	val  string
	pos  int // byte offset of the first byte
	end  int // byte offset after the last byte
	// esc is set for a string literal that contained a backslash escape:
	// its val is a best-effort decoding, so places that need the exact value
	// (table names in cluster(…), setting values) refuse it.
	esc bool
}

func (t token) String() string {
	switch t.kind {
	case tEOF:
		return "end of input"
	case tString:
		return "'" + t.val + "'"
	case tQIdent:
		return "`" + t.val + "`"
	}
	return t.val
}

// checkRunes refuses bytes and characters that have no place in a
// statement anywhere, string literals and comments included.
func checkRunes(src string) {
	if !utf8.ValidString(src) {
		panic(deny("the query is not valid UTF-8"))
	}
	for i, r := range src {
		switch {
		case r == 0:
			panic(deny("NUL byte at offset %d", i))
		case r < 0x20 && r != '\t' && r != '\n' && r != '\r', r == 0x7f:
			panic(deny("control character 0x%02x at offset %d", r, i))
		case r >= 0x80 && r <= 0x9f:
			panic(deny("control character U+%04X at offset %d", r, i))
		case r >= 0x200b && r <= 0x200f, r >= 0x202a && r <= 0x202e,
			r >= 0x2060 && r <= 0x2064, r >= 0x2066 && r <= 0x2069, r == 0xfeff, r == 0xad:
			panic(deny("invisible or direction-changing character U+%04X at offset %d", r, i))
		}
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isHex(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
func isWordStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}
func isWordChar(c byte) bool { return isWordStart(c) || isDigit(c) }

// lex splits src into tokens the way ClickHouse's lexer does, refusing
// whatever ClickHouse versions could read differently. The last token is
// tEOF.
func lex(src string) []token {
	toks := make([]token, 0, len(src)/3+8)
	n := len(src)
	depth := 0
	// prev returns the last significant token, as ClickHouse's lexer uses it
	// to tell "t.1" (tuple access) from ".1" (a number).
	prev := func() token {
		if len(toks) == 0 {
			return token{kind: tEOF}
		}
		return toks[len(toks)-1]
	}
	lineComment := func(i int) int {
		j := strings.IndexByte(src[i:], '\n')
		if j < 0 {
			j = n - i
		}
		if k := strings.IndexByte(src[i:i+j], ';'); k >= 0 {
			panic(deny("';' inside a comment at offset %d: statement boundaries would be ambiguous", i+k))
		}
		return i + j
	}
	i := 0
	for i < n {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '-' && i+1 < n && src[i+1] == '-':
			i = lineComment(i)
		case c == '/' && i+1 < n && src[i+1] == '/':
			panic(deny("'//' at offset %d: ClickHouse versions disagree on whether it starts a comment; use --", i))
		case c == '#':
			if i+1 < n && (src[i+1] == ' ' || src[i+1] == '!') {
				i = lineComment(i)
				continue
			}
			panic(deny("'#' at offset %d: ClickHouse reads '#' as a comment only before a space or '!'", i))
		case c == '/' && i+1 < n && src[i+1] == '*':
			j := i + 2
			for {
				if j+1 >= n {
					panic(deny("unterminated block comment at offset %d", i))
				}
				if src[j] == '*' && src[j+1] == '/' {
					j += 2
					break
				}
				if src[j] == '/' && src[j+1] == '*' {
					panic(deny("nested block comment at offset %d: ClickHouse versions disagree on where it ends", j))
				}
				if src[j] == ';' {
					panic(deny("';' inside a comment at offset %d: statement boundaries would be ambiguous", j))
				}
				j++
			}
			i = j
		case c == '\'':
			t := lexQuoted(src, i, '\'')
			t.kind = tString
			toks = append(toks, t)
			i = t.end
		case c == '"' || c == '`':
			t := lexQuoted(src, i, c)
			if t.esc {
				panic(deny("backslash escape in the quoted identifier at offset %d", i))
			}
			if t.val == "" {
				panic(deny("empty quoted identifier at offset %d", i))
			}
			for k := 0; k < len(t.val); k++ {
				if t.val[k] >= 0x80 {
					panic(deny("non-ASCII character in the quoted identifier at offset %d: identifiers must be ASCII", i))
				}
			}
			t.kind = tQIdent
			toks = append(toks, t)
			i = t.end
		case isDigit(c):
			j := lexNumber(src, i, prev().kind == tPunct && prev().val == ".")
			toks = append(toks, token{kind: tNumber, val: src[i:j], pos: i, end: j})
			i = j
		case c == '.':
			p := prev()
			if i > 0 && (!(i+1 < n && isDigit(src[i+1])) ||
				(p.kind == tPunct && (p.val == ")" || p.val == "]")) ||
				p.kind == tWord || p.kind == tQIdent || p.kind == tNumber) {
				toks = append(toks, token{kind: tPunct, val: ".", pos: i, end: i + 1})
				i++
				continue
			}
			j := lexNumber(src, i, false)
			toks = append(toks, token{kind: tNumber, val: src[i:j], pos: i, end: j})
			i = j
		case isWordStart(c):
			if (c == 'x' || c == 'X' || c == 'b' || c == 'B') && i+1 < n && src[i+1] == '\'' {
				j := i + 2
				for j < n && ((c == 'x' || c == 'X') && isHex(src[j]) || (c == 'b' || c == 'B') && (src[j] == '0' || src[j] == '1')) {
					j++
				}
				if j >= n || src[j] != '\'' {
					panic(deny("malformed %c'…' string at offset %d", c, i))
				}
				toks = append(toks, token{kind: tString, val: src[i+2 : j], pos: i, end: j + 1})
				i = j + 1
				continue
			}
			j := i + 1
			for j < n && isWordChar(src[j]) {
				j++
			}
			if j < n && src[j] == '$' {
				panic(deny("'$' at offset %d: identifiers with '$' and heredocs are not accepted", j))
			}
			toks = append(toks, token{kind: tWord, val: src[i:j], pos: i, end: j})
			i = j
		case c >= 0x80:
			r, _ := utf8.DecodeRuneInString(src[i:])
			panic(deny("non-ASCII character %q (U+%04X) at offset %d outside a string literal or comment: identifiers must be ASCII", r, r, i))
		default:
			op, ok := lexPunct(src, i)
			if !ok {
				panic(punctDenial(src, i))
			}
			switch op {
			case "(", "[":
				depth++
				if depth > MaxNesting {
					panic(deny("nesting deeper than %d levels at offset %d", MaxNesting, i))
				}
			case ")", "]":
				depth--
			}
			toks = append(toks, token{kind: tPunct, val: op, pos: i, end: i + len(op)})
			i += len(op)
		}
	}
	return append(toks, token{kind: tEOF, pos: n, end: n})
}

// lexQuoted reads a '…', "…" or `…` token starting at src[i]: a backslash
// escapes the next byte and a doubled quote stands for itself, as in
// ClickHouse.
func lexQuoted(src string, i int, q byte) token {
	var b strings.Builder
	esc := false
	j := i + 1
	for {
		if j >= len(src) {
			what := "string literal"
			if q != '\'' {
				what = "quoted identifier"
			}
			panic(deny("unterminated %s at offset %d", what, i))
		}
		c := src[j]
		switch {
		case c == '\\':
			if j+1 >= len(src) {
				j++
				continue
			}
			esc = true
			b.WriteByte(unescape(src[j+1]))
			j += 2
		case c == q:
			if j+1 < len(src) && src[j+1] == q {
				b.WriteByte(q)
				j += 2
				continue
			}
			return token{val: b.String(), pos: i, end: j + 1, esc: esc}
		default:
			b.WriteByte(c)
			j++
		}
	}
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 't':
		return '\t'
	case 'r':
		return '\r'
	case '0':
		return 0
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'v':
		return '\v'
	case 'a':
		return '\a'
	}
	return c
}

// lexNumber returns the end of the number starting at src[i]. afterDot
// means the previous token was '.', where ClickHouse reads only digits (so
// that x.1.2 is two tuple accesses).
func lexNumber(src string, i int, afterDot bool) int {
	n := len(src)
	j := i
	digits := func() int {
		k := j
		for j < n && isDigit(src[j]) {
			j++
		}
		return j - k
	}
	switch {
	case afterDot:
		digits()
	case src[j] == '0' && j+2 < n && (src[j+1] == 'x' || src[j+1] == 'X') && isHex(src[j+2]):
		j += 2
		for j < n && isHex(src[j]) {
			j++
		}
		if j < n && (src[j] == '.' || src[j] == 'p' || src[j] == 'P') {
			panic(deny("hexadecimal floating-point number at offset %d is not accepted", i))
		}
	default:
		d := digits()
		if j < n && src[j] == '.' {
			j++
			d += digits()
		}
		if d == 0 {
			panic(deny("malformed number at offset %d", i))
		}
		if j+1 < n && (src[j] == 'e' || src[j] == 'E') {
			j++
			if j+1 < n && (src[j] == '+' || src[j] == '-') {
				j++
			}
			if digits() == 0 {
				panic(deny("malformed number at offset %d", i))
			}
		}
	}
	if j < n && (isWordChar(src[j]) || src[j] == '$') {
		panic(deny("malformed number at offset %d: a number may not run into letters or '_'", i))
	}
	return j
}

// lexPunct reads an operator. "==" becomes "=" and "<>" becomes "!=".
func lexPunct(src string, i int) (string, bool) {
	c := src[i]
	var next byte
	if i+1 < len(src) {
		next = src[i+1]
	}
	switch c {
	case '(', ')', '[', ']', ',', ';', '+', '*', '%', '?', '/':
		return src[i : i+1], true
	case '{':
		// A map literal ({'a': 1}, {}) starts with a string or is empty;
		// a query parameter ({name:Type}) starts with a name.
		j := i + 1
		for j < len(src) && (src[j] == ' ' || src[j] == '\t' || src[j] == '\n' || src[j] == '\r') {
			j++
		}
		if j < len(src) && (src[j] == '\'' || src[j] == '}') {
			return "{", true
		}
	case '}':
		return "}", true
	case '-':
		if next == '>' {
			return "->", true
		}
		return "-", true
	case '=':
		if next == '=' {
			return "==", true
		}
		return "=", true
	case '!':
		if next == '=' {
			return "!=", true
		}
	case '<':
		switch next {
		case '=':
			return "<=", true
		case '>':
			return "<>", true
		}
		return "<", true
	case '>':
		if next == '=' {
			return ">=", true
		}
		return ">", true
	case ':':
		if next == ':' {
			return "::", true
		}
		return ":", true
	case '|':
		if next == '|' {
			return "||", true
		}
	}
	return "", false
}

func punctDenial(src string, i int) *denial {
	switch src[i] {
	case '{':
		return deny("query parameters ({name:Type}) are not supported (offset %d)", i)
	case '$':
		return deny("'$' at offset %d: heredocs ($$…$$) and '$' in identifiers are not accepted", i)
	case '\\':
		return deny("'\\' at offset %d outside a string literal is not accepted", i)
	case '@':
		return deny("'@' at offset %d is not accepted", i)
	}
	return deny("unexpected character %q at offset %d", src[i], i)
}
