// Package agentload holds many simulated agents against one broker: the
// broker's load test (BenchmarkAgentLoad2000 in `make bench`, and a small
// run in `make test` so that the harness cannot rot).
//
// Each simulated [Agent] speaks the real agent protocol (package protocol)
// with its own Ed25519 key, from its own source address on loopback: it
// pairs with a one-time token issued through the broker API, opens a
// session by signing a broker challenge (after checking the broker signed
// it with its key), sends heartbeats at the interval the broker gives, and,
// as the customer's witness, checks every larger audit checkpoint against
// the last one it cosigned (signature and consistency proof) and cosigns
// it. Thousands run in one process, as goroutines.
//
// Only the transport differs from production: the broker, in its own
// process, serves the agent API on a loopback listener and identifies each
// caller by its source address ([LoopbackPeers], plugged in through
// broker.Config.AgentTransport), where in production the tailnet's WhoIs
// does; a 2-core machine cannot run thousands of tailnet nodes. Sessions
// stay bound to the caller's node ID exactly as on the tailnet. Nothing in
// a binary imports this package.
package agentload

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/protocol"
)

// Version is what simulated agents report in their heartbeats.
const Version = "agentload"

// Agent is one simulated agent. Its methods are not safe for concurrent
// use: each agent is driven by one goroutine, as a real agent's heartbeat
// loop is.
type Agent struct {
	base      string // the broker's agent API, http://HOST:PORT
	source    netip.Addr
	hc        *http.Client
	brokerKey ed25519.PublicKey
	logKey    note.Verifier // the broker's checkpoints
	key       ed25519.PrivateKey
	witness   note.Signer // this agent's cosignatures
	now       func() time.Time
	started   time.Time

	// Pairing and session state.
	AgentID  string
	token    string
	interval time.Duration
	clock    *protocol.ClockOffset // the previous exchange's estimate

	// Witness state: the last checkpoint cosigned, and whether the
	// current session saw it again (as the real agent asks once per
	// session).
	cosignedSize uint64
	cosignedRoot [32]byte
	confirmed    bool
	checkpoint   uint64 // latest size the broker announced
}

// NewAgent returns an agent that calls the broker's agent API at
// agentAddr (HOST:PORT) from source, a loopback address of its own, and
// trusts brokerKey (text form, as in join.json).
func NewAgent(agentAddr string, source netip.Addr, brokerKey string) (*Agent, error) {
	bk, err := protocol.ParsePublicKey(brokerKey)
	if err != nil {
		return nil, fmt.Errorf("broker key: %w", err)
	}
	vkey, err := audit.VerifierKey(audit.OriginFor(bk), bk)
	if err != nil {
		return nil, err
	}
	lv, err := audit.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("agent key: %w", err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: source.AsSlice()}, Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     2 * time.Minute,
	}
	return &Agent{
		base: "http://" + agentAddr, source: source,
		hc:        &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		brokerKey: bk, logKey: lv, key: key, now: time.Now,
	}, nil
}

// Source is the loopback address the agent calls from; the broker's
// transport takes its node from it.
func (a *Agent) Source() netip.Addr { return a.source }

// Close drops the agent's idle connection.
func (a *Agent) Close() { a.hc.CloseIdleConnections() }

// Error is a refusal the broker answered with.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// Refused reports whether err is the broker refusing the agent for good
// (403), as opposed to a failure worth retrying.
func Refused(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusForbidden && e.Code != "wrong_node"
}

// callTimeout is the real agent's bound on one call: twice the heartbeat
// interval, at least 2 s and at most 5 s.
func (a *Agent) callTimeout() time.Duration {
	d := a.interval
	if d <= 0 {
		d = 5 * time.Second
	}
	return min(max(2*d, 2*time.Second), 5*time.Second)
}

// call posts in to the agent API and decodes the answer into out.
func (a *Agent) call(ctx context.Context, path, bearer string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.callTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, protocol.MaxBody))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		var e brokerapi.ErrorEnvelope
		if json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
			e.Error = brokerapi.ErrorBody{Code: "http", Message: res.Status}
		}
		return &Error{Status: res.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	return json.Unmarshal(body, out)
}

// Pair presents a one-time pairing token and checks the broker proves its
// key over the agent's key and a fresh nonce.
func (a *Agent) Pair(ctx context.Context, token string) error {
	pub := protocol.EncodePublicKey(a.key.Public().(ed25519.PublicKey))
	nonce := make([]byte, 32)
	rand.Read(nonce)
	var res protocol.PairResponse
	if err := a.call(ctx, protocol.PathPair, "", protocol.PairRequest{Token: token, PublicKey: pub, Nonce: nonce, Version: Version}, &res); err != nil {
		return fmt.Errorf("pair: %w", err)
	}
	if !ed25519.Verify(a.brokerKey, protocol.PairTranscript(res, pub, nonce), res.Signature) {
		return errors.New("pair: the broker did not prove its key")
	}
	a.AgentID = res.AgentID
	ws, err := audit.NewSigner(protocol.WitnessName(a.AgentID), a.key)
	if err != nil {
		return err
	}
	a.witness, a.started = ws, a.now()
	return nil
}

// OpenSession answers a broker challenge, after checking the broker
// signed it with its key.
func (a *Agent) OpenSession(ctx context.Context) error {
	var ch protocol.ChallengeResponse
	if err := a.call(ctx, protocol.PathChallenge, "", protocol.ChallengeRequest{AgentID: a.AgentID}, &ch); err != nil {
		return fmt.Errorf("challenge: %w", err)
	}
	if !ed25519.Verify(a.brokerKey, protocol.ChallengeTranscript(a.AgentID, ch.Challenge), ch.Signature) {
		return errors.New("challenge: the broker did not sign it with its key")
	}
	var s protocol.SessionResponse
	err := a.call(ctx, protocol.PathSession, "", protocol.SessionRequest{
		AgentID: a.AgentID, Challenge: ch.Challenge,
		Signature: ed25519.Sign(a.key, protocol.SessionTranscript(a.AgentID, ch.Challenge)),
	}, &s)
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	a.token, a.interval, a.confirmed = s.Token, time.Duration(s.HeartbeatInterval), false
	return nil
}

// Token is the agent's session token ("" before a session).
func (a *Agent) Token() string { return a.token }

// Interval is the heartbeat interval the broker last gave.
func (a *Agent) Interval() time.Duration { return a.interval }

// Heartbeat sends one heartbeat in the open session, as the real agent
// does: with its send time and the previous exchange's clock estimate. A
// 401 drops the session, so that the next beat opens a new one.
func (a *Agent) Heartbeat(ctx context.Context) error {
	hb := protocol.Heartbeat{
		Version:   Version,
		UptimeMS:  a.now().Sub(a.started).Milliseconds(),
		TailnetIP: a.source.String(),
		Clock:     a.clock,
		SentAt:    a.now(),
	}
	var res protocol.HeartbeatResponse
	err := a.call(ctx, protocol.PathHeartbeat, a.token, hb, &res)
	received := a.now()
	var e *Error
	if errors.As(err, &e) && (e.Status == http.StatusUnauthorized || e.Code == "wrong_node") {
		a.token = ""
	}
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	a.interval, a.checkpoint = time.Duration(res.HeartbeatInterval), res.CheckpointSize
	if o, ok := protocol.EstimateClock(hb.SentAt, res.ReceivedAt, res.AnsweredAt, received); ok {
		a.clock = &o
	}
	return nil
}

// Witness fetches the broker's latest checkpoint when it announced a
// larger one than the agent cosigned (or, once per session, the same
// one), checks it — signed by the broker's key, consistent with the last
// one cosigned — and cosigns it. It reports whether it delivered a
// cosignature.
func (a *Agent) Witness(ctx context.Context) (cosigned bool, err error) {
	if a.token == "" || (a.checkpoint == a.cosignedSize && (a.cosignedSize == 0 || a.confirmed)) {
		return false, nil
	}
	var res protocol.CheckpointResponse
	if err := a.call(ctx, protocol.PathCheckpoint, a.token, protocol.CheckpointRequest{SinceSize: a.cosignedSize}, &res); err != nil {
		return false, fmt.Errorf("fetch checkpoint: %w", err)
	}
	cp, err := audit.OpenCheckpoint(res.Note, a.logKey)
	if err != nil {
		return false, err
	}
	switch {
	case cp.Size < a.cosignedSize:
		return false, fmt.Errorf("checkpoint %d is smaller than %d, cosigned before", cp.Size, a.cosignedSize)
	case cp.Size == a.cosignedSize:
		if cp.Root != a.cosignedRoot {
			return false, fmt.Errorf("checkpoint %d has another root than the one cosigned", cp.Size)
		}
		a.confirmed = true
		return false, nil
	case a.cosignedSize > 0:
		proof := make([][32]byte, len(res.Proof))
		for i, p := range res.Proof {
			if len(p) != 32 {
				return false, fmt.Errorf("consistency proof hash %d is %d bytes, want 32", i, len(p))
			}
			copy(proof[i][:], p)
		}
		if err := audit.VerifyConsistency(a.cosignedSize, cp.Size, a.cosignedRoot, cp.Root, proof); err != nil {
			return false, err
		}
	}
	note, err := audit.Cosign(res.Note, a.logKey, a.witness)
	if err != nil {
		return false, err
	}
	a.cosignedSize, a.cosignedRoot, a.confirmed = cp.Size, cp.Root, true
	var ack struct{}
	if err := a.call(ctx, protocol.PathCosign, a.token, protocol.CosignRequest{Size: cp.Size, Note: note}, &ack); err != nil {
		return false, fmt.Errorf("deliver cosignature: %w", err)
	}
	return true, nil
}
