package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source"
)

// TestCompressedAnswer: asked for zstd, the agent sends a successful
// answer compressed — fewer bytes than the plain answer, the same rows
// once decompressed, the result trailer intact — and a small answer and
// a refusal plain.
func TestCompressedAnswer(t *testing.T) {
	ch := chtest.Start(t)
	la := newLimitsAgent(t, Upstreams{
		ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password,
		Limits: QueryLimits{MaxResultRows: 1_000_000},
	}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const sql = "SELECT database, table, name, type FROM system.columns WHERE database = 'system' ORDER BY table, name LIMIT 5000"
	query := func(grant, sql string, zstdWanted bool) (*http.Response, []byte) {
		t.Helper()
		b, _ := json.Marshal(protocol.ClickHouseQuery{SQL: sql})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, la.url+protocol.PathClickHouseQuery, bytes.NewReader(b))
		req.Header.Set(protocol.HeaderGrant, la.grant(t, grant))
		if zstdWanted {
			req.Header.Set("Accept-Encoding", protocol.EncodingZstd)
		}
		res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, raw
	}
	plainRes, plain := query("grant-plain", sql, false)
	zres, compressed := query("grant-zstd", sql, true)
	if plainRes.Header.Get("Content-Encoding") != "" || zres.Header.Get("Content-Encoding") != protocol.EncodingZstd {
		t.Fatalf("Content-Encoding plain %q, asked for zstd %q", plainRes.Header.Get("Content-Encoding"), zres.Header.Get("Content-Encoding"))
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	got, err := dec.DecodeAll(compressed, nil)
	if err != nil {
		t.Fatalf("decompress: %v", err)
	}
	if !bytes.Equal(got, plain) {
		t.Errorf("decompressed answer (%d bytes) differs from the plain one (%d bytes)", len(got), len(plain))
	}
	if zres.Trailer.Get(protocol.TrailerResult) != protocol.ResultComplete {
		t.Errorf("compressed answer's trailer %q, want %q", zres.Trailer.Get(protocol.TrailerResult), protocol.ResultComplete)
	}
	if len(compressed)*3 > len(plain) {
		t.Errorf("compressed %d bytes of a repetitive system.columns answer to %d, want at least 3×", len(plain), len(compressed))
	}
	t.Logf("system.columns answer: %d bytes plain, %d compressed (%.1f×)", len(plain), len(compressed), float64(len(plain))/float64(len(compressed)))

	// A small answer goes plain, whatever was asked: compressing a packet
	// costs every hop more than it saves.
	sres, small := query("grant-small", "SELECT 4242", true)
	if sres.Header.Get("Content-Encoding") != "" || string(small) != "4242\n4242\n" || sres.Trailer.Get(protocol.TrailerResult) != protocol.ResultComplete {
		t.Errorf("small answer: Content-Encoding %q, body %q, result %q; want plain 4242 (its name, then its value), complete", sres.Header.Get("Content-Encoding"), small, sres.Trailer.Get(protocol.TrailerResult))
	}

	// A refusal stays plain JSON, whatever was asked.
	rres, body := query("grant-refused", "SELECT * FROM default.secret", true)
	if rres.StatusCode != http.StatusForbidden || rres.Header.Get("Content-Encoding") != "" || !json.Valid(body) {
		t.Errorf("refusal: status %d, Content-Encoding %q, body %q; want a plain JSON 403", rres.StatusCode, rres.Header.Get("Content-Encoding"), body)
	}
}

// TestSmallAnswerHeldThroughAFlush: a small answer whose end comes a few
// milliseconds after its bytes (past the stream's flush delay) still
// goes plain, while a slow answer's first bytes reach the broker,
// compressed, without waiting for its end.
func TestSmallAnswerHeldThroughAFlush(t *testing.T) {
	upstream := make(chan *io.PipeReader, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &streamWriter{ResponseWriter: w, rc: http.NewResponseController(w), now: time.Now, idle: 10 * time.Second, end: time.Now().Add(time.Minute)}
		zw := &zstdWriter{streamWriter: sw}
		source.Stream(zw, <-upstream, nil)
		zw.close()
		sw.finish()
	}))
	defer srv.Close()
	call := func(pr *io.PipeReader) *http.Response {
		t.Helper()
		upstream <- pr
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Header.Set("Accept-Encoding", protocol.EncodingZstd)
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	// The end arrives 10 ms after the answer: five flush delays, well
	// within smallHold.
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("4242\n"))
		time.Sleep(10 * time.Millisecond)
		pw.Write([]byte("4242\n"))
		pw.Close()
	}()
	res := call(pr)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.Header.Get("Content-Encoding") != "" || string(body) != "4242\n4242\n" || res.Trailer.Get(protocol.TrailerResult) != protocol.ResultComplete {
		t.Errorf("small answer with a late end: Content-Encoding %q, body %q, result %q; want it plain and complete", res.Header.Get("Content-Encoding"), body, res.Trailer.Get(protocol.TrailerResult))
	}

	// A slow answer: its first bytes arrive while the upstream is still
	// thinking, compressed.
	pr, pw = io.Pipe()
	defer pw.Close()
	pw2 := make(chan error, 1)
	go func() { _, err := pw.Write([]byte("first row\n")); pw2 <- err }()
	res = call(pr)
	defer res.Body.Close()
	if res.Header.Get("Content-Encoding") != protocol.EncodingZstd {
		t.Fatalf("slow answer: Content-Encoding %q, want %q", res.Header.Get("Content-Encoding"), protocol.EncodingZstd)
	}
	dec, err := zstd.NewReader(res.Body, protocol.ZstdDecoderOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	first := make([]byte, len("first row\n"))
	if _, err := io.ReadFull(dec, first); err != nil || string(first) != "first row\n" {
		t.Fatalf("slow answer's first bytes before its end: %q, %v", first, err)
	}
	if err := <-pw2; err != nil {
		t.Fatal(err)
	}
}
