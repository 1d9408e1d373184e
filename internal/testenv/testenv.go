// Package testenv decides what a test does when something it needs from the
// machine, such as a PostgreSQL installation, is missing: on a developer's
// machine the test is skipped, with the reason; in CI, where a skip would
// silently hide a whole backend, it fails.
package testenv

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// InCI reports whether the tests run in continuous integration, as said by
// the CI environment variable that CI services set ("true", "1", …).
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// Require stops t unless ok. The message, formatted from format and args,
// names what is missing; it should say how to provide it. Outside CI the
// test is skipped; in CI (see [InCI]) it fails.
func Require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("missing test dependency (CI=true, so this fails instead of skipping): %s", msg)
		return
	}
	t.Skipf("SKIPPED, missing test dependency (with CI=true this fails): %s", msg)
}
