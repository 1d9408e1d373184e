package testenv

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Skipf and Fatalf instead of ending
// the test, so that Require's choice between them can be observed.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, args ...any) { r.skipped = fmt.Sprintf(format, args...) }

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestInCI(t *testing.T) {
	tests := []struct {
		env  string
		want bool
	}{
		{"", false},
		{"true", true},
		{"TRUE", true},
		{"1", true},
		{"false", false},
		{"0", false},
		{"yes please", false},
	}
	for _, tt := range tests {
		t.Setenv("CI", tt.env)
		if got := InCI(); got != tt.want {
			t.Errorf("with CI=%q, InCI() = %v, want %v", tt.env, got, tt.want)
		}
	}
}

func TestRequire(t *testing.T) {
	tests := []struct {
		name         string
		ci           string
		ok           bool
		wantSkipped  bool
		wantFailed   bool
		wantInReason string
	}{
		{name: "present", ci: "true", ok: true},
		{name: "missing on a laptop", ci: "", ok: false, wantSkipped: true, wantInReason: "no widget in /opt"},
		{name: "missing in CI", ci: "true", ok: false, wantFailed: true, wantInReason: "no widget in /opt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			Require(r, tt.ok, "no widget in %s", "/opt")
			if got := r.skipped != ""; got != tt.wantSkipped {
				t.Errorf("Require skipped = %v (%q), want %v", got, r.skipped, tt.wantSkipped)
			}
			if got := r.failed != ""; got != tt.wantFailed {
				t.Errorf("Require failed = %v (%q), want %v", got, r.failed, tt.wantFailed)
			}
			if reason := r.skipped + r.failed; !strings.Contains(reason, tt.wantInReason) {
				t.Errorf("Require reason = %q, want it to contain %q", reason, tt.wantInReason)
			}
		})
	}
}
