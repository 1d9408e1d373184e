package sqlstore

import (
	"strings"
	"testing"
)

// TestParseSettingsIgnoresRemovedApprovalMode holds that a settings row
// written before the vendor-set approval mode was removed still decodes,
// and that its "approval_mode" survives nowhere: writing the settings back
// drops it, so a stored "auto_prometheus" can spare no request a review.
func TestParseSettingsIgnoresRemovedApprovalMode(t *testing.T) {
	for _, js := range []string{
		`{"labels":{"env":"prod"},"approval_mode":"auto_prometheus"}`,
		`{"approval_mode":"customer","labels":{"env":"prod"}}`,
	} {
		s, err := parseSettings(js)
		if err != nil {
			t.Fatalf("parseSettings(%q) error = %v", js, err)
		}
		if s.Labels["env"] != "prod" {
			t.Errorf("parseSettings(%q).Labels = %v, want env=prod", js, s.Labels)
		}
		out, err := settingsJSON(s)
		if err != nil {
			t.Fatalf("settingsJSON(%+v) error = %v", s, err)
		}
		if strings.Contains(out, "approval_mode") {
			t.Errorf("settingsJSON(parseSettings(%q)) = %s, want no approval_mode", js, out)
		}
	}
}
