package agentcli

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

func TestGuardCatalogAndFunctions(t *testing.T) {
	for _, c := range []struct {
		args    []string
		wantErr bool
		want    []string
	}{
		{[]string{"catalog"}, false, []string{"system.parts", "system.query_log", "SAFE"}},
		{[]string{"catalog", "system.dictionaries"}, false, []string{"last_exception", "sensitive", "bytes_allocated", "safe"}},
		{[]string{"catalog", "dictionaries"}, false, []string{"last_exception"}},
		{[]string{"catalog", "system.no_such_table"}, true, []string{"not in the guard's catalog"}},
		{[]string{"functions", "dictget"}, false, []string{"dictGet", "refuse", "reads a dictionary"}},
		{[]string{"functions", "formatReadable"}, false, []string{"formatReadableSize", "allow"}},
		{[]string{"functions"}, false, []string{"-If", "combinator", "allow"}},
		{[]string{"functions", "zzznothing"}, true, []string{"no function in the catalog"}},
		{[]string{"catalog", "a", "b"}, true, []string{"at most one argument"}},
		{[]string{"sql", "SELECT name, status FROM system.dictionaries"}, false, []string{"ALLOW", "system.dictionaries.status", "safe in the guard's catalog"}},
		{[]string{"sql", "SELECT last_exception FROM system.dictionaries"}, true, []string{"DENY", "sensitive"}},
	} {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"guard"}, c.args...), strings.NewReader(""), &out, io.Discard)
		got := out.String()
		if err != nil {
			got += err.Error()
		}
		if (err != nil) != c.wantErr {
			t.Errorf("guard %q: err = %v, want error %v\n%s", c.args, err, c.wantErr, got)
		}
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("guard %q: output does not contain %q:\n%.500s", c.args, w, got)
			}
		}
	}
}
