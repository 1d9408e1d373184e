package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source/registry"
	"github.com/tetherhq/tether/internal/tailnet"
)

// handler serves the agent's tailnet API. Every call must come from a
// broker node that proved the pinned broker key, and carry a fresh
// signature by that key.
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+protocol.PathAgentPing, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, protocol.PingResponse{
			AgentID: a.state.AgentID, Version: a.cfg.Version, UptimeMS: a.now().Sub(a.start).Milliseconds(),
		})
	})
	for _, src := range registry.All() {
		mux.HandleFunc(src.AgentPattern(), a.serveSource(src))
	}
	mux.HandleFunc("POST "+protocol.PathRevoke, a.handleRevoke)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.verifyBroker(r); err != nil {
			a.log.Warn("refused a call", "remote", r.RemoteAddr, "path", r.URL.Path, "reason", err)
			a.metrics().refusedBrokerCall(r.URL.Path, err)
			if aerr := a.RecordEvent(r.Context(), audit.Event{
				Type:    audit.AuthFailed,
				Source:  audit.Source{IP: r.RemoteAddr},
				Outcome: audit.Failure,
				Reason:  "agent refused a call: " + err.Error(),
				Details: map[string]any{"path": r.URL.Path, "method": r.Method},
			}); aerr != nil {
				a.log.Error("could not spool an audit event", "err", aerr)
			}
			writeJSON(w, http.StatusForbidden, brokerapi.ErrorEnvelope{Error: brokerapi.ErrorBody{Code: "forbidden", Message: err.Error()}})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// verifyBroker checks both identity layers of a broker call: the tailnet
// node (WhoIs) and the broker key's signature over the request, its time
// (within maxSkew) and a nonce never seen before.
//
// A revocation push is accepted whatever its time: a clock off by more
// than maxSkew must not keep a revoked grant working. The node, the
// signature (over the agent's ID, the method, the path, the time, the
// nonce and the body) and the nonce still bind it; its nonce is kept for
// 2×maxSkew from its arrival, like any call's, so that a copy is refused
// as a replay in that time, and the set of nonces stays as small as
// before (the broker retries a refused push twice a second). A replay
// after that is accepted, and harmless: it can only revoke again the
// grant its signed body names, which was revoked already, until that
// grant's signed expiry.
func (a *Agent) verifyBroker(r *http.Request) error {
	id, err := a.callerOf(r)
	if err != nil {
		return refusedCall(reasonNotAPeer, errors.New("caller is not a tailnet peer"))
	}
	if err := a.checkBrokerNode(r.Context(), id); err != nil {
		return refusedCall(reasonNotBroker, err)
	}
	ms, err := strconv.ParseInt(r.Header.Get(protocol.HeaderBrokerTime), 10, 64)
	if err != nil {
		return refusedCall(reasonMalformedCall, errors.New("missing or malformed signature time"))
	}
	at := time.UnixMilli(ms)
	now := a.now()
	revocation := r.Method == http.MethodPost && r.URL.Path == protocol.PathRevoke
	keepNonce := at.Add(2 * maxSkew)
	if d := now.Sub(at); revocation {
		keepNonce = now.Add(2 * maxSkew)
	} else if d > maxSkew || d < -maxSkew {
		return refusedCall(reasonClockSkew, skewError(d))
	}
	nonce := r.Header.Get(protocol.HeaderBrokerNonce)
	if len(nonce) < 16 || len(nonce) > 64 {
		return refusedCall(reasonMalformedCall, errors.New("missing or malformed nonce"))
	}
	sig, err := base64.RawURLEncoding.DecodeString(r.Header.Get(protocol.HeaderBrokerSignature))
	if err != nil {
		return refusedCall(reasonMalformedCall, errors.New("malformed signature"))
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, protocol.MaxBody))
	if err != nil {
		return refusedCall(reasonMalformedCall, errors.New("request body too large"))
	}
	// The handler reads the body the signature covered.
	r.Body = io.NopCloser(bytes.NewReader(body))
	key, err := protocol.ParsePublicKey(a.state.BrokerKey)
	if err != nil {
		return err
	}
	if !ed25519.Verify(key, protocol.CallTranscript(a.state.AgentID, r.Method, r.URL.RequestURI(), at, nonce, body), sig) {
		return refusedCall(reasonBadSignature, errors.New("signature does not verify with the pinned broker key"))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Forget expired nonces at most once a second, not on every call: at
	// hundreds of calls a second the map holds tens of thousands.
	if now.Sub(a.noncesSwept) >= time.Second {
		for n, exp := range a.nonces {
			if now.After(exp) {
				delete(a.nonces, n)
			}
		}
		a.noncesSwept = now
	}
	if _, seen := a.nonces[nonce]; seen {
		return refusedCall(reasonReplayedCall, errors.New("replayed call"))
	}
	if len(a.nonces) >= 100000 {
		return refusedCall(reasonNonceLimit, errors.New("too many calls in flight"))
	}
	a.nonces[nonce] = keepNonce
	return nil
}

// skewError says why a call whose signature time is d behind the agent's
// clock (negative: ahead of it) is refused, naming the skew.
func skewError(d time.Duration) error {
	way := "ahead of"
	if d < 0 {
		way, d = "behind", -d
	}
	return fmt.Errorf("clock skew: the agent's clock is %v %s the broker's signature time, beyond the %v allowed; fix the clock (NTP) of the agent's host or the broker's ('broker deployment show' shows the skew its heartbeats measure)",
		d.Round(time.Millisecond), way, maxSkew)
}

// DefaultWriteTimeout is the agent API's write timeout when
// [Config.WriteTimeout] is zero.
const DefaultWriteTimeout = 60 * time.Second

// writeTimeout is the configured write timeout, or the default.
func (a *Agent) writeTimeout() time.Duration {
	if a.cfg.WriteTimeout > 0 {
		return a.cfg.WriteTimeout
	}
	return DefaultWriteTimeout
}

// newAPIServer is the HTTP server of the agent API on the tailnet. Its
// write timeout bounds the answers of the broker's short calls; a
// data-plane answer moves its own deadline as it streams (streamWriter).
func (a *Agent) newAPIServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      a.writeTimeout(),
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10, // a grant with its approval proofs
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
		ConnContext:       withConnCaller,
	}
}

func (a *Agent) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/healthz" {
		http.NotFound(w, r)
		return
	}
	a.mu.Lock()
	last, interval := a.lastOK, a.interval
	a.mu.Unlock()
	status, code := "ok", http.StatusOK
	if last.IsZero() || a.now().Sub(last) > 3*interval {
		status, code = "broker unreachable", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"status": status, "agent_id": a.state.AgentID, "last_heartbeat": last})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// connCaller holds the tailnet identity of one connection's peer, looked
// up once: the peer of a TCP connection cannot change.
type connCaller struct {
	once sync.Once
	id   tailnet.Identity
	err  error
}

type connCallerKey struct{}

// withConnCaller is the agent API server's ConnContext.
func withConnCaller(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connCallerKey{}, new(connCaller))
}

// callerOf returns who is calling, asking the tailnet once per
// connection.
func (a *Agent) callerOf(r *http.Request) (tailnet.Identity, error) {
	cc, _ := r.Context().Value(connCallerKey{}).(*connCaller)
	if cc == nil {
		return a.link().node.WhoIs(r.Context(), r.RemoteAddr)
	}
	cc.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		defer cancel()
		cc.id, cc.err = a.link().node.WhoIs(ctx, r.RemoteAddr)
	})
	return cc.id, cc.err
}
