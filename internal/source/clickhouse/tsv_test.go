package clickhouse

import "testing"

func TestUnescapeTSV(t *testing.T) {
	tests := []struct{ in, want string }{
		{`plain`, "plain"},
		{`a\tb`, "a\tb"},
		{`line1\nline2`, "line1\nline2"},
		{`back\\slash`, `back\slash`},
		{`\\n`, `\n`},
		{`it\'s`, "it's"},
		{`cr\r nul\0 bs\b ff\f`, "cr\r nul\x00 bs\b ff\f"},
		{`\x`, `\x`},
		{`end\`, `end\`},
	}
	for _, tt := range tests {
		if got := UnescapeTSV(tt.in); got != tt.want {
			t.Errorf("UnescapeTSV(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
