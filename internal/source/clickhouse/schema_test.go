package clickhouse

import (
	"strings"
	"testing"
)

func TestParseSchema(t *testing.T) {
	s, err := parseSchema(strings.NewReader("parts\tname\t\nquery_log\tProfileEvents.Names\tALIAS\nweird\ta\\tb\t\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s["system.parts"]; len(got) != 1 || got[0].Name != "name" || got[0].Alias {
		t.Errorf("system.parts = %+v", got)
	}
	if got := s["system.query_log"]; len(got) != 1 || !got[0].Alias {
		t.Errorf("system.query_log = %+v", got)
	}
	if got := s["system.weird"]; len(got) != 1 || got[0].Name != "a\tb" {
		t.Errorf("escaped name = %+v", got)
	}
	for _, bad := range []string{"", "parts\n", "parts\tname\n", "\tname\t\n"} {
		if _, err := parseSchema(strings.NewReader(bad)); err == nil {
			t.Errorf("parseSchema(%q) = nil error", bad)
		}
	}
	if _, err := parseSchema(strings.NewReader(strings.Repeat("t\tc\t\n", maxSchemaBytes/5+1))); err == nil {
		t.Error("an over-long column list was accepted")
	}
}
