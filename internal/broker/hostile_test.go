package broker_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/tailnet"
)

// sink is a loopback TCP listener standing in for a service only the
// broker's host can reach (the cloud metadata endpoint, say). It counts
// every connection made to it.
type sink struct {
	ln    net.Listener
	conns atomic.Int64
}

func newSink(t *testing.T) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\nmetadata-secret-abc123"))
			c.Close()
		}
	}()
	return s
}

func (s *sink) URL() string { return "http://" + s.ln.Addr().String() }

// hostileAgent is an agent written by an attacker in the customer's VPC:
// it pairs and heartbeats by the protocol, reports 127.0.0.1 as its
// address, and answers every broker call as mode says.
// hostileRow is a row of the hostile agent's well-formed answers.
const hostileRow = "system\tcolumns\tname\tString\n"

type hostileAgent struct {
	node  *tailnet.Node
	calls atomic.Int64
	mode  atomic.Value // "redirect", "flood", "bomb", "gzip", "zstd" or "zstd+junk"
}

func startHostileAgent(t *testing.T, b *brokertest.Broker, token, redirectTo string) *hostileAgent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	j := b.Join()
	n, err := tailnet.New(tailnet.Config{Hostname: "hostile", ControlURL: j.ControlURL, AuthKey: j.AuthKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if _, err := n.Up(ctx); err != nil {
		t.Fatal(err)
	}
	peer, err := n.WaitPeer(ctx, j.BrokerName)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileAgent{node: n}
	h.mode.Store("redirect")
	ln, err := n.Listen(protocol.AgentPort)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.calls.Add(1)
		switch h.mode.Load() {
		case "redirect":
			// 307 keeps the method, the body and the grant header.
			http.Redirect(w, r, redirectTo+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		case "bomb":
			// A small compressed answer that decompresses without end,
			// sent in one write.
			w.Header().Set("Content-Type", "text/tab-separated-values")
			w.Header().Set("Content-Encoding", "zstd")
			var bomb bytes.Buffer
			enc, _ := zstd.NewWriter(&bomb, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
			zeros := make([]byte, 1<<20)
			for range 64 {
				enc.Write(zeros)
			}
			enc.Close()
			w.Write(bomb.Bytes())
		case "gzip":
			w.Header().Set("Content-Encoding", "gzip")
			w.Write([]byte("\x1f\x8b"))
		case "zstd", "zstd+junk":
			// A well-formed compressed answer, or one with bytes after
			// its compressed stream's end.
			w.Header().Set("Content-Type", "text/tab-separated-values")
			w.Header().Set("Content-Encoding", "zstd")
			w.Header().Set("Trailer", protocol.TrailerResult)
			enc, _ := zstd.NewWriter(w)
			enc.Write(bytes.Repeat([]byte(hostileRow), 10000))
			enc.Close()
			if h.mode.Load() == "zstd+junk" {
				w.Write([]byte("not zstd at all"))
			}
			w.Header().Set(protocol.TrailerResult, protocol.ResultComplete)
		case "flood":
			w.Header().Set("Content-Type", "text/tab-separated-values")
			chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
			for {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	hc := &http.Client{Transport: n.HTTPTransport(), Timeout: 30 * time.Second}
	base := "http://" + net.JoinHostPort(peer.IP.String(), strconv.Itoa(protocol.BrokerPort))
	call := func(path, bearer string, in, out any) {
		t.Helper()
		raw, _ := json.Marshal(in)
		req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(raw))
		req.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("hostile agent: %s: %v", path, err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("hostile agent: %s: %s: %s", path, res.Status, body)
		}
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("hostile agent: %s: %v", path, err)
		}
	}
	key := func() ed25519.PrivateKey { _, k, _ := ed25519.GenerateKey(rand.Reader); return k }()
	nonce := make([]byte, 32)
	rand.Read(nonce)
	var pair protocol.PairResponse
	call(protocol.PathPair, "", protocol.PairRequest{Token: token, PublicKey: protocol.EncodePublicKey(key.Public().(ed25519.PublicKey)), Nonce: nonce, Version: "evil"}, &pair)
	var ch protocol.ChallengeResponse
	call(protocol.PathChallenge, "", protocol.ChallengeRequest{AgentID: pair.AgentID}, &ch)
	var sess protocol.SessionResponse
	call(protocol.PathSession, "", protocol.SessionRequest{AgentID: pair.AgentID, Challenge: ch.Challenge,
		Signature: ed25519.Sign(key, protocol.SessionTranscript(pair.AgentID, ch.Challenge))}, &sess)
	var hb protocol.HeartbeatResponse
	call(protocol.PathHeartbeat, sess.Token, protocol.Heartbeat{Version: "evil", TailnetIP: "127.0.0.1"}, &hb)
	return h
}

// TestHostileAgentCannotRedirectTheBroker: an agent that reports
// 127.0.0.1 as its address and answers every call with a redirect to a
// loopback service of the broker's host gets the broker to reach nothing
// but itself, at its tailnet address: the sink sees no connection, the
// engineer gets a clear error, and the refusal is audited. An agent that
// streams an endless answer is cut off at the broker's bound, and the
// engineer sees an incomplete result, not a complete one.
func TestHostileAgentCannotRedirectTheBroker(t *testing.T) {
	s := newSink(t)
	b := brokertest.Start(t, func(c *broker.Config) { c.MaxAgentAnswer = 1 << 20 })
	ctx := context.Background()
	res, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	h := startHostileAgent(t, b, res.Pairing.Token, s.URL())

	// The broker shows, and dials, the address the tailnet gave the
	// agent's node, not the one it reported.
	d, err := b.Client.GetDeployment(ctx, "acme/prod")
	if err != nil {
		t.Fatal(err)
	}
	if d.Agent == nil || d.Agent.TailnetIP != h.node.IPv4().String() {
		t.Fatalf("deployment agent = %+v, want tailnet IP %v (the agent reported 127.0.0.1)", d.Agent, h.node.IPv4())
	}
	_, err = b.Client.Ping(ctx, "acme/prod", 1)
	if err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("ping of a redirecting agent = %v, want a refusal naming the redirect", err)
	}
	if h.calls.Load() == 0 {
		t.Error("the hostile agent saw no call: the broker dialled somewhere else")
	}

	// The engineer's query, under a real grant, is refused with a clear
	// error; nothing reaches the sink.
	eng, acme := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "approver@acme.test")
	ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "hostile agent test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acme.Approve(ctx, ar.ID, ""); err != nil {
		t.Fatal(err)
	}
	_, err = eng.QueryClickHouse(ctx, "acme/prod", "SELECT 1", "TSV")
	var ae *brokerapi.Error
	if !errors.As(err, &ae) || ae.Code != "agent_refused_answer" || strings.Contains(ae.Message, "127.0.0.1") || strings.Contains(ae.Message, "100.") {
		t.Errorf("query through a redirecting agent = %v, want agent_refused_answer naming no address", err)
	}
	if n := s.conns.Load(); n != 0 {
		t.Fatalf("the loopback sink received %d connections: the broker followed the agent's redirect", n)
	}
	refused := 0
	for _, typ := range auditTypes(t, b) {
		if strings.HasPrefix(typ, "agent.call_refused: the agent answered with a redirect") {
			refused++
		}
	}
	if refused < 2 {
		t.Errorf("audit log has %d agent.call_refused redirect events, want one per refused call (2): %q", refused, auditTypes(t, b))
	}

	// An endless answer is cut at the bound and reported as incomplete.
	h.mode.Store("flood")
	rc, err := eng.QueryClickHouse(ctx, "acme/prod", "SELECT 1", "TSV")
	if err != nil {
		t.Fatalf("query through a flooding agent: %v", err)
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	if err == nil {
		t.Errorf("endless answer read as complete after %d bytes; want an error (cut off)", n)
	}
	if n > 2<<20 {
		t.Errorf("relayed %d bytes, want at most about the 1 MiB bound", n)
	}
	found := false
	for _, typ := range auditTypes(t, b) {
		found = found || strings.HasPrefix(typ, "agent.call_refused: the agent's answer passed 1048576 bytes")
	}
	if !found {
		t.Errorf("no agent.call_refused for the oversized answer: %q", auditTypes(t, b))
	}

	// A compressed answer that decompresses past the bound (64 MiB of
	// zeros in a few KiB) is cut at the bound, decompressed.
	h.mode.Store("bomb")
	rc, err = eng.QueryClickHouse(ctx, "acme/prod", "SELECT 1", "TSV")
	switch {
	case errors.As(err, &ae) && ae.Code == "agent_refused_answer" && strings.Contains(ae.Message, "size limit"):
		// Cut before any byte was relayed: a plain refusal.
	case err != nil:
		t.Fatalf("query through a compression-bombing agent: %v", err)
	default:
		n, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err == nil || n > 2<<20 {
			t.Errorf("compression bomb: relayed %d bytes, %v; want a cut at about the 1 MiB bound", n, err)
		}
	}
	found = false
	for _, typ := range auditTypes(t, b) {
		found = found || strings.HasPrefix(typ, "agent.call_refused: the agent's answer decompressed past 1048576 bytes")
	}
	if !found {
		t.Errorf("no agent.call_refused for the compression bomb: %q", auditTypes(t, b))
	}

	// The same bomb to a client that accepts zstd, which the broker
	// passes compressed answers on to as they came: cut all the same,
	// before the client can decompress more than about the bound.
	raw := func(acceptZstd bool) *http.Response {
		t.Helper()
		body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: "SELECT 1"})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.APIURL()+"/api/v1/deployments/acme/prod/clickhouse/query", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+eng.Token())
		if acceptZstd {
			req.Header.Set("Accept-Encoding", "zstd")
		}
		res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	decoded := func(res *http.Response) (int64, error) {
		defer res.Body.Close()
		if res.Header.Get("Content-Encoding") != "zstd" {
			return io.Copy(io.Discard, res.Body)
		}
		dec, err := zstd.NewReader(res.Body, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return 0, err
		}
		defer dec.Close()
		return io.Copy(io.Discard, dec)
	}
	for _, accept := range []bool{true, false} {
		refusedBefore := strings.Count(strings.Join(auditTypes(t, b), "\n"), "decompressed past")
		res := raw(accept)
		switch {
		case res.StatusCode == http.StatusBadGateway:
			// Cut before any byte was relayed: a plain refusal.
			res.Body.Close()
		case res.StatusCode != http.StatusOK:
			t.Errorf("compression bomb, accept zstd %v: status %d", accept, res.StatusCode)
		default:
			if got := res.Header.Get("Content-Encoding") == "zstd"; got != accept {
				t.Errorf("accept zstd %v: the answer's Content-Encoding is %q", accept, res.Header.Get("Content-Encoding"))
			}
			if n, err := decoded(res); err == nil || n > 2<<20 {
				t.Errorf("compression bomb, accept zstd %v: the client decompressed %d bytes, %v; want a cut at about the 1 MiB bound", accept, n, err)
			}
		}
		if after := strings.Count(strings.Join(auditTypes(t, b), "\n"), "decompressed past"); after <= refusedBefore {
			t.Errorf("compression bomb, accept zstd %v: no agent.call_refused recorded", accept)
		}
	}

	// A well-formed compressed answer: passed on compressed to a client
	// that accepts zstd, decompressed for one that does not, decompressed
	// by the CLI's client; the same rows, and complete, every way.
	h.mode.Store("zstd")
	want := strings.Repeat(hostileRow, 10000)
	for _, accept := range []bool{true, false} {
		res := raw(accept)
		if res.Header.Get("Vary") != "Accept-Encoding" {
			t.Errorf("accept zstd %v: Vary = %q, want Accept-Encoding", accept, res.Header.Get("Vary"))
		}
		var buf bytes.Buffer
		var err error
		if accept {
			dec, _ := zstd.NewReader(res.Body)
			_, err = io.Copy(&buf, dec)
			dec.Close()
			io.Copy(io.Discard, res.Body)
		} else {
			_, err = io.Copy(&buf, res.Body)
		}
		res.Body.Close()
		if err != nil || buf.String() != want || res.Trailer.Get(protocol.TrailerResult) != protocol.ResultComplete {
			t.Errorf("accept zstd %v: %d bytes (want %d), %v, result %q", accept, buf.Len(), len(want), err, res.Trailer.Get(protocol.TrailerResult))
		}
	}
	cres, err := eng.DataPlane(ctx, http.MethodPost, "acme/prod", "clickhouse/query", strings.NewReader(`{"sql":"SELECT 1"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cres.Body)
	cres.Body.Close()
	if err != nil || string(got) != want || cres.Trailer.Get(protocol.TrailerResult) != protocol.ResultComplete || !cres.Uncompressed {
		t.Errorf("the CLI's client: %d bytes (want %d), %v, result %q, uncompressed %v", len(got), len(want), err, cres.Trailer.Get(protocol.TrailerResult), cres.Uncompressed)
	}

	// Bytes after the compressed stream's end are not passed on as a
	// complete answer, and the broker records the answer as cut.
	h.mode.Store("zstd+junk")
	jres := raw(true)
	if _, err := decoded(jres); err == nil && jres.Trailer.Get(protocol.TrailerResult) == protocol.ResultComplete {
		t.Error("a compressed answer with junk after its end was passed on as complete")
	}
	found = false
	for _, typ := range auditTypes(t, b) {
		found = found || strings.HasPrefix(typ, "query.finished: the agent's answer broke off before its end: the agent's compressed answer:")
	}
	if !found {
		t.Errorf("no query.finished failure for junk after the compressed stream: %q", auditTypes(t, b))
	}

	// A coding the broker did not ask for is refused, not relayed.
	h.mode.Store("gzip")
	_, err = eng.QueryClickHouse(ctx, "acme/prod", "SELECT 1", "TSV")
	if !errors.As(err, &ae) || ae.Code != "agent_refused_answer" || !strings.Contains(ae.Message, "content coding") {
		t.Errorf("query through an agent answering gzip = %v, want agent_refused_answer about the content coding", err)
	}
}
