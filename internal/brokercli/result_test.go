package brokercli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/protocol"
)

// TestQueryIncomplete: a result cut short — the broker's trailer says
// incomplete (a revocation, the grant's expiry, ClickHouse gone), the
// trailer is missing, the connection breaks in the middle of a row, or
// ClickHouse ends the answer with its exception — makes 'broker query'
// fail with "the result is incomplete: <reason>", prints no torn last row
// and no "N rows" as success; the whole rows before the cut are printed.
func TestQueryIncomplete(t *testing.T) {
	const whole = "n\n1\n2\n"
	tests := []struct {
		name    string
		serve   func(w http.ResponseWriter)
		output  string
		wantErr string // "" means the result is whole
		wantOut string
	}{
		{
			name:    "complete",
			serve:   func(w http.ResponseWriter) { answer(w, whole, protocol.ResultComplete, "") },
			output:  "csv",
			wantOut: whole,
		},
		{
			name: "revoked",
			serve: func(w http.ResponseWriter) {
				answer(w, "n\n1\n2\n3", protocol.ResultIncomplete("stopped: the grant was revoked"), "stopped: the grant was revoked")
			},
			output:  "csv",
			wantErr: "the result is incomplete: stopped: the grant was revoked",
			wantOut: whole,
		},
		{
			name:    "stopped only (an older broker)",
			serve:   func(w http.ResponseWriter) { answer(w, "n\n1\n2\n3", "", "stopped: the grant expired") },
			output:  "csv",
			wantErr: "the result is incomplete: stopped: the grant expired",
			wantOut: whole,
		},
		{
			name:    "no trailer",
			serve:   func(w http.ResponseWriter) { answer(w, whole, "", "") },
			output:  "csv",
			wantErr: "the result is incomplete: the answer carried no Tether-Result trailer",
			wantOut: whole,
		},
		{
			name:    "connection broken mid-row",
			serve:   func(w http.ResponseWriter) { breakOff(w, "n\n1\n2\n3") },
			output:  "csv",
			wantErr: "the result is incomplete: the answer broke off before its end",
			wantOut: whole,
		},
		{
			name:    "connection broken mid-row, json",
			serve:   func(w http.ResponseWriter) { breakOff(w, "{\"n\":1}\n{\"n\":2}\n{\"n") },
			output:  "json",
			wantErr: "the result is incomplete: the answer broke off before its end",
			wantOut: "{\"n\":1}\n{\"n\":2}\n",
		},
		{
			name:    "connection broken mid-row, table",
			serve:   func(w http.ResponseWriter) { breakOff(w, "n\tm\n1\t1\n2\t2\n3\t") },
			output:  "table",
			wantErr: "the result is incomplete: the answer broke off before its end",
			wantOut: "n  m\n-  -\n1  1\n2  2\n",
		},
		{
			name:    "torn row with a clean end, table",
			serve:   func(w http.ResponseWriter) { answer(w, "n\tm\n1\t1\n2\t2\n3\t3", "", "") },
			output:  "table",
			wantErr: "the result is incomplete: ",
			wantOut: "n  m\n-  -\n1  1\n2  2\n",
		},
		{
			name: "ClickHouse exception after rows",
			serve: func(w http.ResponseWriter) {
				answer(w, "n\n1\n2\nCode: 159. DB::Exception: Timeout exceeded: elapsed 60.0 seconds\n", protocol.ResultIncomplete("stopped: ClickHouse ended the answer with its error code 159"), "")
			},
			output:  "csv",
			wantErr: "the result is incomplete: ClickHouse stopped it with an error: Code: 159. DB::Exception: Timeout exceeded",
			wantOut: whole,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("POST /api/v1/deployments/acme/prod/clickhouse/query", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Tether-Query-Id", "tether-g-1")
				tt.serve(w)
			})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			var out, errOut bytes.Buffer
			err := Run(context.Background(), []string{"query", "--config", testConfig(t, srv.URL), "--deployment", "acme/prod", "--output", tt.output, "SELECT n"}, &out, &errOut)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("query = %v, want success", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || cli.ExitCode(err) == 0):
				t.Errorf("query = %v, want an error containing %q and a non-zero exit", err, tt.wantErr)
			}
			if tt.wantErr != "" && strings.Contains(errOut.String(), " rows in ") {
				t.Errorf("stderr = %q: a cut result reported as rows in a time, as if whole", errOut.String())
			}
			if out.String() != tt.wantOut {
				t.Errorf("stdout = %q, want %q (whole rows only)", out.String(), tt.wantOut)
			}
		})
	}
}

// answer writes body with the trailers result and stopped (each unless
// empty).
func answer(w http.ResponseWriter, body, result, stopped string) {
	w.Header().Set("Trailer", protocol.TrailerResult+", "+protocol.TrailerStopped)
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(body))
	if result != "" {
		w.Header().Set(protocol.TrailerResult, result)
	}
	if stopped != "" {
		w.Header().Set(protocol.TrailerStopped, stopped)
	}
}

// breakOff sends body and breaks the connection, as a dying agent or
// broker does.
func breakOff(w http.ResponseWriter, body string) {
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(body))
	http.NewResponseController(w).Flush()
	panic(http.ErrAbortHandler)
}
