package sqlstore

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoadMigrations(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name        string
		fsys        fstest.MapFS
		wantNames   []string
		wantErrText string
	}{
		{
			name: "sorted by version, not by name",
			fsys: fstest.MapFS{
				"10_ten.sql":      file("10"),
				"0002_two.sql":    file("2"),
				"1_one.sql":       file("1"),
				"README.md":       file("not a migration"),
				"003_three.sql":   file("3"),
				"4_four.sql":      file("4"),
				"5_five.sql":      file("5"),
				"6_six.sql":       file("6"),
				"7_seven.sql":     file("7"),
				"8_eight.sql":     file("8"),
				"9_nine.sql":      file("9"),
				"old/0001_x.sql":  file("in a subdirectory: ignored"),
				"0011_eleven.sql": file("11"),
			},
			wantNames: []string{"1_one.sql", "0002_two.sql", "003_three.sql", "4_four.sql", "5_five.sql", "6_six.sql",
				"7_seven.sql", "8_eight.sql", "9_nine.sql", "10_ten.sql", "0011_eleven.sql"},
		},
		{
			name:        "empty",
			fsys:        fstest.MapFS{"README.md": file("")},
			wantErrText: "no migrations",
		},
		{
			name:        "no version",
			fsys:        fstest.MapFS{"0001_init.sql": file(""), "init.sql": file("")},
			wantErrText: "init.sql: name does not start with a version",
		},
		{
			name:        "version zero",
			fsys:        fstest.MapFS{"0000_init.sql": file("")},
			wantErrText: "0000_init.sql: name does not start with a version",
		},
		{
			name:        "gap",
			fsys:        fstest.MapFS{"0001_init.sql": file(""), "0003_more.sql": file("")},
			wantErrText: "0003_more.sql: version 3, want 2",
		},
		{
			name:        "duplicate version",
			fsys:        fstest.MapFS{"0001_init.sql": file(""), "0001_again.sql": file("")},
			wantErrText: "version 1, want 2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			migs, err := loadMigrations(tt.fsys)
			if tt.wantErrText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrText) {
					t.Fatalf("loadMigrations() error = %v, want one containing %q", err, tt.wantErrText)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadMigrations() error = %v", err)
			}
			var names []string
			for i, m := range migs {
				names = append(names, m.name)
				if m.version != i+1 {
					t.Errorf("loadMigrations()[%d].version = %d, want %d", i, m.version, i+1)
				}
				if m.sql != string(tt.fsys[m.name].Data) {
					t.Errorf("loadMigrations()[%d].sql = %q, want %q", i, m.sql, tt.fsys[m.name].Data)
				}
			}
			if got, want := strings.Join(names, " "), strings.Join(tt.wantNames, " "); got != want {
				t.Errorf("loadMigrations() names = %s, want %s", got, want)
			}
		})
	}
}
