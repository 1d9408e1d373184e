package ghub

import (
	"errors"
	"strings"
	"testing"
)

func TestParseTicketRef(t *testing.T) {
	long := strings.Repeat("a", 39) + "/" + strings.Repeat("r", 100) + "#2147483648"
	good := []struct {
		in   string
		want TicketRef
	}{
		{"acme/ops#1", TicketRef{"acme", "ops", 1}},
		{"acme-corp/incident.tracker_2#42", TicketRef{"acme-corp", "incident.tracker_2", 42}},
		{"A1/.github#12", TicketRef{"A1", ".github", 12}},
		{"a/b#2147483648", TicketRef{"a", "b", MaxIssueNumber}},
		{"0/...#9", TicketRef{"0", "...", 9}},
		{long, TicketRef{strings.Repeat("a", 39), strings.Repeat("r", 100), MaxIssueNumber}},
	}
	for _, tt := range good {
		got, err := ParseTicketRef(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseTicketRef(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		if s := got.String(); s != tt.in {
			t.Errorf("ParseTicketRef(%q).String() = %q, want the input back", tt.in, s)
		}
	}

	bad := []struct {
		in  string
		why string // in the error
	}{
		{"", "empty"},
		{"acme/ops#x", "issue number"},
		{"acme#1", "no owner/"},
		{"acme/ops#0", "issue number"},
		{"acme/ops#-1", "issue number"},
		{"acme/ops#+1", "issue number"},
		{"acme/ops#01", "issue number"},
		{"acme/ops#2147483649", "issue number"},
		{"acme/ops#99999999999", "issue number"},
		{"acme/ops#1.0", "issue number"},
		{"acme/ops#1e3", "issue number"},
		{"acme/ops#\u0661", "issue number"},
		{"acme/ops#", "issue number"},
		{"acme/ops#1#2", "issue number"},
		{"acme/ops", "no #N"},
		{"https://github.com/acme/ops/issues/1", "is a URL"},
		{"github.com/acme/ops#1", "owner"},
		{"/ops#1", "owner"},
		{"-acme/ops#1", "owner"},
		{"acme-/ops#1", "owner"},
		{"ac--me/ops#1", "owner"},
		{"ac_me/ops#1", "owner"},
		{strings.Repeat("a", 40) + "/ops#1", "owner"},
		{"acme/#1", "repository"},
		{"acme/.#1", "repository"},
		{"acme/..#1", "repository"},
		{"acme/ops/x#1", "repository"},
		{"acme/o ps#1", "repository"},
		{"acme/" + strings.Repeat("r", 101) + "#1", "repository"},
		{" acme/ops#1", "owner"},
		{"acme/ops#1 ", "issue number"},
		{"acme/ops#1\n", "issue number"},
		{long + "0", "longer than any valid ref"},
	}
	for _, tt := range bad {
		got, err := ParseTicketRef(tt.in)
		if !errors.Is(err, ErrInvalidRef) || got != (TicketRef{}) {
			t.Errorf("ParseTicketRef(%q) = %+v, %v; want ErrInvalidRef", tt.in, got, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tt.why) || !strings.Contains(msg, "owner/repo#N") {
			t.Errorf("ParseTicketRef(%q) error %q; want it to mention %q and owner/repo#N", tt.in, msg, tt.why)
		}
	}
}

func TestTicketRefValidate(t *testing.T) {
	tests := []struct {
		ref TicketRef
		ok  bool
	}{
		{TicketRef{"acme", "ops", 1}, true},
		{TicketRef{}, false},
		{TicketRef{"acme", "ops", 0}, false},
		{TicketRef{"acme", "ops", -3}, false},
		{TicketRef{"acme/x", "ops", 1}, false},
		{TicketRef{"acme", "ops#2", 1}, false},
		{TicketRef{"acme", "..", 1}, false},
	}
	for _, tt := range tests {
		if err := tt.ref.validate(); (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidRef)) {
			t.Errorf("TicketRef%+v.validate() = %v, want ok: %t", tt.ref, err, tt.ok)
		}
	}
}

func FuzzParseTicketRef(f *testing.F) {
	for _, s := range []string{
		"acme/ops#1", "acme/ops#2147483648", "acme/ops#x", "acme#1", "acme/ops#0",
		"acme/ops#-1", "https://github.com/acme/ops/issues/1", "a-b/c.d_e#99", "acme/ops#1#2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseTicketRef(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidRef) || r != (TicketRef{}) {
				t.Fatalf("ParseTicketRef(%q) = %+v, %v; want the zero ref and ErrInvalidRef", s, r, err)
			}
			return
		}
		// One ticket, one spelling: what parses is canonical.
		if r.String() != s {
			t.Fatalf("ParseTicketRef(%q).String() = %q, want the input back", s, r.String())
		}
		if r.Number < 1 || r.Number > MaxIssueNumber || !validLogin(r.Owner) || !validRepo(r.Repo) {
			t.Fatalf("ParseTicketRef(%q) = %+v, out of range", s, r)
		}
		if strings.ContainsAny(r.Owner+r.Repo, "/#?% \\") {
			t.Fatalf("ParseTicketRef(%q) = %+v, which would escape its API path", s, r)
		}
		if err := r.validate(); err != nil {
			t.Fatalf("ParseTicketRef(%q).validate() = %v", s, err)
		}
	})
}
