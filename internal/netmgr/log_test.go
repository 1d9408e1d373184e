package netmgr

import (
	"log/slog"
	"net/netip"
	"testing"
)

// tLogWriter writes log lines to t.Log.
type tLogWriter struct{ t testing.TB }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
