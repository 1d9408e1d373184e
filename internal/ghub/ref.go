package ghub

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxIssueNumber is the largest issue number [ParseTicketRef] accepts.
const MaxIssueNumber = 1 << 31

// maxRefLen is the longest well-formed ref: a 39-byte owner, a 100-byte
// repository and a 10-digit number, with their separators.
const maxRefLen = 39 + 1 + 100 + 1 + 10

// TicketRef names a GitHub issue cited as an incident ticket.
type TicketRef struct {
	Owner  string // user or organization
	Repo   string // repository name
	Number int    // issue number, 1 to [MaxIssueNumber]
}

// String returns r as owner/repo#N, the form [ParseTicketRef] accepts.
func (r TicketRef) String() string {
	return r.Owner + "/" + r.Repo + "#" + strconv.Itoa(r.Number)
}

// validate reports whether r could have come from [ParseTicketRef], for
// refs built by hand.
func (r TicketRef) validate() error {
	s := r.String()
	p, err := ParseTicketRef(s)
	if err != nil {
		return err
	}
	if p != r {
		return fmt.Errorf("ticket ref %q: owner, repository or number holds a separator; %s: %w", truncate(s, 80), refWant, ErrInvalidRef)
	}
	return nil
}

const refWant = "cite the issue as owner/repo#N, for example acme/ops#123"

// ParseTicketRef parses exactly owner/repo#N: owner a GitHub user or
// organization name, repo a GitHub repository name, N a decimal issue
// number from 1 to [MaxIssueNumber] without sign or leading zeros. It
// accepts no URLs, spaces or other spellings, so one ticket has one ref.
// Errors wrap [ErrInvalidRef].
func ParseTicketRef(ref string) (TicketRef, error) {
	fail := func(format string, args ...any) (TicketRef, error) {
		return TicketRef{}, fmt.Errorf("ticket ref %q: %s; %s: %w", truncate(ref, 80), fmt.Sprintf(format, args...), refWant, ErrInvalidRef)
	}
	switch {
	case ref == "":
		return fail("empty")
	case len(ref) > maxRefLen:
		return fail("%d bytes, longer than any valid ref", len(ref))
	case strings.Contains(ref, "://"):
		return fail("is a URL")
	}
	path, num, ok := strings.Cut(ref, "#")
	if !ok {
		return fail("no #N issue number")
	}
	owner, repo, ok := strings.Cut(path, "/")
	if !ok {
		return fail("no owner/ before the repository name")
	}
	if !validLogin(owner) {
		return fail("owner %q is not a GitHub user or organization name (1-39 letters, digits or single hyphens, not starting or ending with a hyphen)", owner)
	}
	if !validRepo(repo) {
		return fail("repository %q is not a GitHub repository name (1-100 letters, digits, '.', '-' or '_', not . or ..)", repo)
	}
	n, ok := parseIssueNumber(num)
	if !ok {
		return fail("issue number %q is not a decimal integer from 1 to %d without sign or leading zeros", num, MaxIssueNumber)
	}
	return TicketRef{Owner: owner, Repo: repo, Number: n}, nil
}

func parseIssueNumber(s string) (int, bool) {
	if s == "" || len(s) > 10 || s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 || n > MaxIssueNumber {
		return 0, false
	}
	return int(n), true
}

// validLogin reports whether s follows GitHub's rules for user and
// organization names: 1-39 ASCII letters, digits or single hyphens, not
// starting or ending with a hyphen.
func validLogin(s string) bool {
	if s == "" || len(s) > 39 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlnum(c):
		case c == '-' && s[i-1] != '-':
		default:
			return false
		}
	}
	return true
}

// validRepo reports whether s follows GitHub's rules for repository
// names: 1-100 ASCII letters, digits, '.', '-' or '_', and not . or ..
// (which would also walk the API path).
func validRepo(s string) bool {
	if s == "" || len(s) > 100 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// validSlug reports whether s looks like a team slug: 1-100 lowercase
// ASCII letters, digits, '-', '_' or '.', not . or .. (GitHub derives
// slugs from team names by lowercasing and replacing other characters).
func validSlug(s string) bool {
	if s == "" || len(s) > 100 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z') && !('0' <= c && c <= '9') && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// truncate bounds user input quoted in errors.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
