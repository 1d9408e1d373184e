package brokercli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/protocol"
)

func TestReadTSVAndRenderTable(t *testing.T) {
	in := "name\tvalue\tnote\n" +
		"merges\t12\t\\N\n" +
		"tab\\there\t3.5\tsaid \\'hi\\'\n" +
		"two\\nlines\t-1\t\\\\\n"
	res, err := readTSV(strings.NewReader(in), 100)
	if err != nil {
		t.Fatal(err)
	}
	wantRows := [][]string{{"merges", "12", "NULL"}, {"tab\there", "3.5", "said 'hi'"}, {"two\nlines", "-1", `\`}}
	if !reflect.DeepEqual(res.header, []string{"name", "value", "note"}) || !reflect.DeepEqual(res.rows, wantRows) || res.truncated {
		t.Fatalf("readTSV = %q %q truncated=%v, want %q", res.header, res.rows, res.truncated, wantRows)
	}
	var out bytes.Buffer
	if err := renderTable(&out, res.header, res.rows); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"name      value  note\n" +
		"--------  -----  ---------\n" +
		"merges       12  NULL\n" +
		"tab here    3.5  said 'hi'\n" +
		"two          -1  \\\n" +
		"lines\n"
	if out.String() != want {
		t.Errorf("renderTable =\n%s\nwant\n%s", out.String(), want)
	}

	// A control character that could drive the terminal is shown, not sent.
	out.Reset()
	renderTable(&out, []string{"q"}, [][]string{{"\x1b[31mred"}})
	if strings.Contains(out.String(), "\x1b") || !strings.Contains(out.String(), `\x1b[31mred`) {
		t.Errorf("renderTable passed an escape sequence to the terminal: %q", out.String())
	}
}

func TestReadTSVLimitsAndErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("n\n")
	for i := 0; i < 50; i++ {
		b.WriteString("1\n")
	}
	res, err := readTSV(strings.NewReader(b.String()), 10)
	if err != nil || len(res.rows) != 10 || !res.truncated {
		t.Errorf("readTSV(50 rows, max 10) = %d rows, truncated %v, %v; want 10, true", len(res.rows), res.truncated, err)
	}
	// Exactly max rows is not truncated.
	res, err = readTSV(strings.NewReader("n\n1\n2\n"), 2)
	if err != nil || len(res.rows) != 2 || res.truncated {
		t.Errorf("readTSV(2 rows, max 2) = %d rows, truncated %v, %v", len(res.rows), res.truncated, err)
	}
	// ClickHouse's exception after some rows ends the result with it.
	in := "a\tb\n1\t2\nCode: 396. DB::Exception: Limit for result exceeded, max rows: 1.00. (TOO_MANY_ROWS_OR_BYTES)\n"
	res, err = readTSV(strings.NewReader(in), 100)
	var ce *clickHouseError
	if len(res.rows) != 1 || err == nil || !strings.Contains(err.Error(), "Code: 396") {
		t.Errorf("readTSV(exception) = %d rows, %v; want 1 row and the exception", len(res.rows), err)
	} else if !errors.As(err, &ce) {
		t.Errorf("readTSV(exception) error is %T, want *clickHouseError", err)
	}
	if _, err := readTSV(strings.NewReader("a\tb\n1\n"), 100); err == nil || !strings.Contains(err.Error(), "row 1 has 1 fields, the header 2") {
		t.Errorf("readTSV(short row) = %v", err)
	}
}

func TestCountingWriter(t *testing.T) {
	var out bytes.Buffer
	c := &countingWriter{w: &out, csv: true}
	c.Write([]byte("a,b\n1,\"x\ny\"\n2,"))
	c.Write([]byte("z\n"))
	if err := c.takeException(); c.lines != 3 || c.end(true) != nil || out.Len() != int(c.bytes) || err != nil {
		t.Errorf("CSV count = %d lines, %d bytes, %v; want 3 records (a quoted newline is not one)", c.lines, c.bytes, err)
	}
	c = &countingWriter{w: &out}
	c.Write([]byte("{\"a\":1}\nCode: 241. DB::Exception: Memory limit exceeded\n"))
	if err := c.takeException(); err == nil || !strings.Contains(err.Error(), "Code: 241") || c.lines != 1 {
		t.Errorf("takeException() = %v, %d rows; want the trailing exception, 1 row", err, c.lines)
	}
}

// fakeDataPlane is a broker whose ClickHouse endpoint answers tsv, and
// whose Prometheus endpoint answers prom with status promStatus.
func fakeDataPlane(t *testing.T, tsv string, promStatus int, prom string) (*httptest.Server, *map[string]string) {
	seen := map[string]string{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/deployments/acme/prod/clickhouse/query", func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		json.NewDecoder(r.Body).Decode(&in)
		seen["sql"], seen["format"], seen["auth"] = in["sql"], in["format"], r.Header.Get("Authorization")
		w.Header().Set("Tether-Query-Id", "tether-g-1")
		w.Header().Set("Trailer", protocol.TrailerResult)
		w.Write([]byte(tsv))
		w.Header().Set(protocol.TrailerResult, protocol.ResultComplete)
	})
	mux.HandleFunc("GET /api/v1/deployments/acme/prod/prometheus/api/v1/{api}", func(w http.ResponseWriter, r *http.Request) {
		seen["api"], seen["query"] = r.PathValue("api"), r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Trailer", protocol.TrailerResult)
		w.WriteHeader(promStatus)
		w.Write([]byte(prom))
		w.Header().Set(protocol.TrailerResult, protocol.ResultComplete)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &seen
}

// TestQueryCommand runs 'broker query' against a fake broker: the table
// output asks for TabSeparatedWithNames, the others pass through.
func TestQueryCommand(t *testing.T) {
	srv, seen := fakeDataPlane(t, "name\tvalue\nuptime\t42\n", 200, "")
	cfg := testConfig(t, srv.URL)
	var out, errOut bytes.Buffer
	if err := Run(context.Background(), []string{"query", "--config", cfg, "--deployment", "acme/prod", "SELECT name, value FROM system.metrics"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if (*seen)["format"] != "TabSeparatedWithNames" || (*seen)["sql"] != "SELECT name, value FROM system.metrics" || (*seen)["auth"] != "Bearer t" {
		t.Errorf("broker saw %v", *seen)
	}
	if out.String() != "name    value\n------  -----\nuptime     42\n" {
		t.Errorf("table output =\n%s", out.String())
	}
	if !strings.HasPrefix(errOut.String(), "query tether-g-1: 1 row in ") {
		t.Errorf("stderr = %q, want the query ID and row count", errOut.String())
	}

	// SQL from stdin, a FORMAT of its own: passed through raw.
	out.Reset()
	errOut.Reset()
	err := run(context.Background(), []string{"query", "--config", cfg, "--deployment", "acme/prod", "-"}, strings.NewReader("SELECT 1 FORMAT CSV"), &out, &errOut, Options{})
	if err != nil || (*seen)["format"] != "" || (*seen)["sql"] != "SELECT 1 FORMAT CSV" || out.String() != "name\tvalue\nuptime\t42\n" || !strings.Contains(errOut.String(), "bytes") {
		t.Errorf("query with FORMAT from stdin = %v; broker saw %v; out %q, stderr %q", err, *seen, out.String(), errOut.String())
	}

	out.Reset()
	if err := Run(context.Background(), []string{"query", "--config", cfg, "--deployment", "acme/prod", "--output", "json", "SELECT 1"}, &out, &errOut); err != nil || (*seen)["format"] != "JSONEachRow" {
		t.Errorf("--output json = %v, format %q", err, (*seen)["format"])
	}
}

func TestQueryError(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/deployments/acme/prod/clickhouse/query", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, http.StatusForbidden, "no_grant", "you have no active grant with scope clickhouse:system on acme/prod")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	err := Run(context.Background(), []string{"query", "--config", testConfig(t, srv.URL), "--deployment", "acme/prod", "SELECT 1"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || cli.ExitCode(err) != 1 || err.Error() != "you have no active grant with scope clickhouse:system on acme/prod" {
		t.Errorf("query refused by the broker = %v, want its message", err)
	}
}

func TestRenderProm(t *testing.T) {
	tests := []struct {
		name, body, want string
		notes            []string
	}{
		{
			name: "vector",
			body: `{"status":"success","data":{"resultType":"vector","result":[
				{"metric":{"__name__":"up","job":"clickhouse","instance":"ch-0:9363"},"value":[1767225600,"1"]},
				{"metric":{"job":"x"},"value":[1767225600.5,"0.25"]}]}}`,
			want: "" +
				"SERIES                                      VALUE  TIME\n" +
				"------------------------------------------  -----  ----------------------\n" +
				"up{instance=\"ch-0:9363\", job=\"clickhouse\"}      1  2026-01-01T00:00:00Z\n" +
				"{job=\"x\"}                                    0.25  2026-01-01T00:00:00.5Z\n",
		},
		{
			name: "matrix",
			body: `{"status":"success","warnings":["results truncated"],"data":{"resultType":"matrix","result":[
				{"metric":{"__name__":"ClickHouseMetrics_Query"},"values":[[1767225600,"3"],[1767225660,"5"]]}]}}`,
			want: "" +
				"SERIES                   POINTS  LAST  LAST TIME\n" +
				"-----------------------  ------  ----  --------------------\n" +
				"ClickHouseMetrics_Query       2     5  2026-01-01T00:01:00Z\n",
			notes: []string{"prometheus warning: results truncated"},
		},
		{
			name: "scalar",
			body: `{"status":"success","data":{"resultType":"scalar","result":[1767225600,"42"]}}`,
			want: "SCALAR  TIME\n------  --------------------\n    42  2026-01-01T00:00:00Z\n",
		},
		{
			name:  "empty vector",
			body:  `{"status":"success","data":{"resultType":"vector","result":[]}}`,
			want:  "SERIES  VALUE  TIME\n------  -----  ----\n",
			notes: []string{"no series matched"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			notes, err := renderProm(&out, []byte(tt.body), time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Errorf("renderProm =\n%s\nwant\n%s", out.String(), tt.want)
			}
			if !reflect.DeepEqual(notes, tt.notes) {
				t.Errorf("renderProm notes = %q, want %q", notes, tt.notes)
			}
		})
	}
}

func TestPromParams(t *testing.T) {
	now := time.Unix(1767225600, 0)
	path, v, err := promParams("up", 0, 0, "", now)
	if err != nil || path != "api/v1/query" || v.Encode() != "query=up" {
		t.Errorf("instant = %s?%s, %v", path, v.Encode(), err)
	}
	path, v, err = promParams("up", 0, 0, "2026-01-01T00:00:00Z", now)
	if err != nil || v.Get("time") != "1767225600" {
		t.Errorf("instant at a time = %s?%s, %v", path, v.Encode(), err)
	}
	path, v, err = promParams("rate(x[5m])", time.Hour, time.Minute, "", now)
	if err != nil || path != "api/v1/query_range" || v.Get("start") != "1767222000" || v.Get("end") != "1767225600" || v.Get("step") != "60" {
		t.Errorf("range = %s?%s, %v", path, v.Encode(), err)
	}
	_, v, _ = promParams("up", time.Hour, 0, "", now)
	if v.Get("step") != "15" { // 1h/250 = 14.4s, rounded up
		t.Errorf("default step for 1h = %s, want 15", v.Get("step"))
	}
}

func TestPromCommand(t *testing.T) {
	srv, seen := fakeDataPlane(t, "", 400, `{"status":"error","errorType":"bad_data","error":"1:4: parse error:\nunexpected end of input"}`)
	err := Run(context.Background(), []string{"prom", "--config", testConfig(t, srv.URL), "--deployment", "acme/prod", "sum("}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || cli.ExitCode(err) != 1 || err.Error() != "prometheus: bad_data: 1:4: parse error: unexpected end of input" {
		t.Errorf("prom with a bad query = %v, want Prometheus's error on one line", err)
	}
	if (*seen)["api"] != "query" || (*seen)["query"] != "query=sum%28" {
		t.Errorf("broker saw %v", *seen)
	}

	srv, seen = fakeDataPlane(t, "", 200, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"prom", "--config", testConfig(t, srv.URL), "--deployment", "acme/prod", "--output", "json", "--range", "10m", "up"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if (*seen)["api"] != "query_range" || !strings.Contains((*seen)["query"], "step=3") || !strings.Contains(out.String(), `"resultType":"vector"`) {
		t.Errorf("prom --range --output json: broker saw %v, printed %s", *seen, out.String())
	}
}
