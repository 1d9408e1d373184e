package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, content, want string
	}{
		{"ok", `{"api_url":"http://127.0.0.1:8443","token":"t"}`, ""},
		{"empty", ``, "the file is empty"},
		{"truncated", `{"api_url":`, "ends before the object is complete"},
		{"syntax", "{\n\n\"api_url\": nope}", "JSON syntax error on line 3"},
		{"unknown field", `{"api_url":"http://x","token":"t","extra":1}`, `unknown field "extra"`},
		{"wrong type", `{"api_url":5,"token":"t"}`, `field "api_url": want a string`},
		{"two objects", `{"api_url":"http://x","token":"t"}{}`, "more than one JSON object"},
		{"bad url", `{"api_url":"ftp://x","token":"t"}`, "want an absolute http:// or https:// URL"},
		{"no credentials yet", `{"api_url":"http://x"}`, ""},
		{"login", `{"api_url":"http://x","login":{"issuer":"v","issuer_url":"https://idp.example","client_id":"c","id_token":"t","expiry":"2026-11-25T10:00:00Z"}}`, ""},
		{"login without token", `{"api_url":"http://x","login":{"issuer":"v","issuer_url":"https://idp.example","client_id":"c"}}`, `run 'broker login' again`},
		{"login bad issuer url", `{"api_url":"http://x","login":{"issuer_url":"idp","client_id":"c","id_token":"t"}}`, `"login.issuer_url"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c CLI
			err := Load(write(tt.name+".json", tt.content), &c)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load(%q) = %v, want error containing %q", tt.content, err, tt.want)
			}
		})
	}
	var c CLI
	if err := Load(filepath.Join(dir, "missing.json"), &c); err == nil || !strings.Contains(err.Error(), "missing.json: no such file or directory") {
		t.Errorf("Load(missing) = %v", err)
	}
	big := write("big.json", `{"token":"`+strings.Repeat("x", MaxFileSize)+`"}`)
	if err := Load(big, &c); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v, want size error", err)
	}
}

func TestWriteAtomicAndMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cli.json")
	if err := Write(p, CLI{APIURL: "http://x", Token: "t"}, 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	var c CLI
	if err := Load(p, &c); err != nil || c.Token != "t" {
		t.Errorf("round trip = %+v, %v", c, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir has %d entries after Write, want 1 (no temp files left)", len(entries))
	}
	if err := Write(filepath.Join(dir, "nodir", "x.json"), c, 0o600); err == nil {
		t.Error("Write into a missing directory succeeded")
	}
}

func TestSecret(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "s")
	os.WriteFile(f, []byte("s3cret\n"), 0o600)
	empty := filepath.Join(dir, "e")
	os.WriteFile(empty, nil, 0o600)
	t.Setenv("TETHER_TEST_SECRET", "from-env")

	for _, tt := range []struct{ ref, want, wantErr string }{
		{"literal", "literal", ""},
		{"env:TETHER_TEST_SECRET", "from-env", ""},
		{"env:TETHER_TEST_UNSET", "", "TETHER_TEST_UNSET is not set"},
		{"file:" + f, "s3cret", ""},
		{"file:" + empty, "", "the file is empty"},
		{"file:" + filepath.Join(dir, "nope"), "", "no such file"},
	} {
		got, err := Secret(tt.ref)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Secret(%q) = %q, %v; want error %q", tt.ref, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Secret(%q) = %q, %v; want %q", tt.ref, got, err, tt.want)
		}
	}
}
