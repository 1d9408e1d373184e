package names

import "testing"

func TestIsLabel(t *testing.T) {
	for s, want := range map[string]bool{
		"acme": true, "prod-1": true, "a": true, "0": true,
		"": false, "-a": false, "a-": false, "Acme": false, "a_b": false, "a.b": false,
		"0123456789012345678901234567890123456789012345678901234567890123": false, // 64
		"012345678901234567890123456789012345678901234567890123456789012":  true,  // 63
	} {
		if got := IsLabel(s); got != want {
			t.Errorf("IsLabel(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestParseDeployment(t *testing.T) {
	for _, c := range []struct {
		ref, tenant, name string
		ok                bool
	}{
		{"acme/prod", "acme", "prod", true},
		{"acme", "", "", false},
		{"acme/", "", "", false},
		{"acme/prod/x", "", "", false},
		{"Acme/prod", "", "", false},
		{"0b1c2d3e-0000-4000-8000-000000000000", "", "", false},
	} {
		tenant, name, ok := ParseDeployment(c.ref)
		if tenant != c.tenant || name != c.name || ok != c.ok {
			t.Errorf("ParseDeployment(%q) = %q, %q, %v", c.ref, tenant, name, ok)
		}
	}
}
