package devbroker_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/devbroker"
)

// TestREADMEListsEveryDevUser keeps the README's dev user table in step
// with the dev identity provider, both ways: a user the tour's readers
// cannot find is one they never try (lead@vendor.test was missing once),
// and a user the README names must log in.
func TestREADMEListsEveryDevUser(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Rows of the table whose header starts "| user | issuer |": the
	// user's address in backquotes, then the issuer's name.
	row := regexp.MustCompile("^\\| `([^`]+@[^`]+)` \\| (\\w+) \\|")
	doc := map[string]string{} // email → issuer
	in := false
	for i, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.HasPrefix(line, "| user | issuer |"):
			in = true
		case in && !strings.HasPrefix(line, "|"):
			in = false
		case in:
			if m := row.FindStringSubmatch(line); m != nil {
				if _, dup := doc[m[1]]; dup {
					t.Errorf("%s:%d: dev user %s is listed twice: remove one row", path, i+1, m[1])
				}
				doc[m[1]] = m[2]
			}
		}
	}
	if len(doc) == 0 {
		t.Fatalf("%s: no dev user table (a header starting \"| user | issuer |\" and rows \"| `EMAIL` | ISSUER | role |\")", path)
	}
	var known []string
	for _, u := range devbroker.Users() {
		known = append(known, u.Email)
		iss, ok := doc[u.Email]
		switch {
		case !ok:
			role := strings.Join(u.Roles, " and ")
			if u.Tenant != "" {
				role += ", tenant " + u.Tenant + " only"
			}
			t.Errorf("dev user %s is not in %s's dev user table: add the row | `%s` | %s | %s |", u.Email, path, u.Email, u.Issuer, role)
		case iss != u.Issuer:
			t.Errorf("%s: dev user %s is listed with issuer %s; the dev identity provider has it at issuer %s: fix the row", path, u.Email, iss, u.Issuer)
		}
	}
	for email := range doc {
		if !slices.Contains(known, email) {
			t.Errorf("%s lists dev user %s, whom the dev identity provider does not know: remove the row, or add the user to devbroker's devIssuers", path, email)
		}
	}
}
