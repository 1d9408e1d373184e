package broker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/tetherhq/tether/internal/brokerapi"

	"tailscale.com/tailcfg"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/tailnet"
)

// Errors of broker → agent calls. Their messages are shown to people: they
// say what happened and carry no address.
var (
	// errAgentOffTailnet: the agent's node is not a current peer, so
	// nothing was sent.
	errAgentOffTailnet = errors.New("agent not on the tailnet: nothing was sent; it may be restarting or offline")
	// errAgentSilent: the agent's node is a peer but did not answer.
	errAgentSilent = fmt.Errorf("the agent did not answer on the tailnet within %v: it may be restarting or offline", tailnet.DialTimeout)
	// errAgentRedirect: the agent answered with a redirect. The broker
	// follows none; the call is refused and audited.
	errAgentRedirect = errors.New("the agent answered with a redirect, which the broker never follows: the call was refused and recorded")
	// errAgentAnswerTooLarge: the agent's answer passed the broker's bound.
	errAgentAnswerTooLarge = errors.New("the agent's answer passed the broker's size limit and was cut off: the result is incomplete")
)

// pingAgent makes one signed call to the agent over the tailnet.
func (b *Broker) pingAgent(ctx context.Context, a store.Agent) (protocol.PingResponse, error) {
	var out protocol.PingResponse
	res, err := b.callAgent(ctx, a, http.MethodGet, protocol.PathAgentPing, nil, nil)
	if err != nil {
		return out, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, protocol.MaxBody))
	if err != nil {
		return out, err
	}
	if res.StatusCode != http.StatusOK {
		var e brokerapi.ErrorEnvelope
		json.Unmarshal(body, &e)
		return out, fmt.Errorf("agent answered %s: %s", res.Status, e.Error.Message)
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, fmt.Errorf("agent answer: %w", err)
	}
	if out.AgentID != a.ID {
		return out, fmt.Errorf("the agent's node answered as agent %s, not %s", out.AgentID, a.ID)
	}
	return out, nil
}

// callDeploymentAgent makes a signed call to the current agent of a
// deployment over the tailnet and returns the agent's response for the
// caller to read and close. requestURI is the path with its query.
func (b *Broker) callDeploymentAgent(ctx context.Context, deploymentID, method, requestURI string, body []byte, header http.Header) (*http.Response, error) {
	d, err := b.store.GetDeployment(ctx, deploymentID)
	if err != nil {
		return nil, fmt.Errorf("deployment %s: %w", deploymentID, err)
	}
	if d.Agent == nil {
		return nil, fmt.Errorf("deployment %s/%s has no paired agent", d.Tenant, d.Name)
	}
	return b.callAgent(ctx, *d.Agent, method, requestURI, body, header)
}

// callAgent makes a signed call to agent a. The agent is dialled only at
// the address the tailnet's netmap gives the node it paired from — never
// at an address the agent reported — through a dialer with no fallback to
// the host network; redirects are refused and audited, and the answer's
// body is bounded by Config.MaxAgentAnswer.
func (b *Broker) callAgent(ctx context.Context, a store.Agent, method, requestURI string, body []byte, header http.Header) (*http.Response, error) {
	ip, err := b.node.NodeAddr(ctx, tailcfg.StableNodeID(a.NodeID))
	if errors.Is(err, tailnet.ErrNotOnTailnet) {
		return nil, errAgentOffTailnet
	}
	if err != nil {
		return nil, fmt.Errorf("find the agent on the tailnet: %w", err)
	}
	req, err := b.signedRequest(ctx, a.ID, method, "http://"+net.JoinHostPort(ip.String(), strconv.Itoa(protocol.AgentPort))+requestURI, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	res, err := b.agentHTC.Do(req)
	switch {
	case errors.Is(err, tailnet.ErrRedirect):
		b.agentCallRefused(ctx, a, requestURI, "the agent answered with a redirect")
		return nil, errAgentRedirect
	case errors.Is(err, tailnet.ErrNotOnTailnet):
		b.node.ForgetPeers()
		return nil, errAgentOffTailnet
	case errors.Is(err, tailnet.ErrPeerSilent):
		b.node.ForgetPeers()
		return nil, errAgentSilent
	case err != nil:
		b.node.ForgetPeers()
		return nil, fmt.Errorf("the agent did not answer: %w", unwrapURLError(err))
	}
	if res.StatusCode >= 300 && res.StatusCode < 400 {
		// A 3xx without Location is not followed by net/http either; a
		// hostile agent gets nothing relayed either way.
		res.Body.Close()
		b.agentCallRefused(ctx, a, requestURI, fmt.Sprintf("the agent answered %d", res.StatusCode))
		return nil, errAgentRedirect
	}
	res.Body = &boundedBody{rc: res.Body, left: b.cfg.MaxAgentAnswer, onLimit: func() {
		b.agentCallRefused(context.WithoutCancel(ctx), a, requestURI, fmt.Sprintf("the agent's answer passed %d bytes", b.cfg.MaxAgentAnswer))
	}}
	return res, nil
}

// unwrapURLError drops net/http's `Post "http://…":` prefix, which names
// an internal address.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// agentCallRefused audits a broker → agent call the broker refused. The
// record is best effort: the call is refused either way.
func (b *Broker) agentCallRefused(ctx context.Context, a store.Agent, requestURI, reason string) {
	path, _, _ := strings.Cut(requestURI, "?")
	err := b.auditLog.Record(ctx, audit.Event{
		Type:       audit.AgentCallRefused,
		Actor:      audit.Actor{Subject: agentSubject(a.ID), Role: "agent"},
		Deployment: a.DeploymentID,
		AgentID:    a.ID,
		Source:     audit.Source{TailnetNode: a.NodeName},
		Outcome:    audit.Failure,
		Reason:     reason,
		Details:    map[string]any{"path": truncate(path, 256)},
	})
	if err != nil {
		b.log.Error("audit write failed", "type", audit.AgentCallRefused, "err", err)
	}
	b.log.Warn("agent answer refused", "agent_id", a.ID, "node", a.NodeName, "path", truncate(path, 256), "reason", reason)
}

// boundedBody reads at most left bytes of an agent's answer, then fails
// with errAgentAnswerTooLarge so that the relay reports the result as cut
// off instead of complete.
type boundedBody struct {
	rc      io.ReadCloser
	left    int64
	onLimit func()
	hit     bool
}

func (r *boundedBody) Read(p []byte) (int, error) {
	if r.left <= 0 {
		if !r.hit {
			r.hit = true
			// Only an answer that really goes on is over the limit.
			var one [1]byte
			if n, _ := r.rc.Read(one[:]); n == 0 {
				return 0, io.EOF
			}
			r.onLimit()
		}
		return 0, errAgentAnswerTooLarge
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	r.left -= int64(n)
	return n, err
}

func (r *boundedBody) Close() error { return r.rc.Close() }

// issueGrant signs a grant with the broker key: the key agents pinned at
// pairing. It checks nothing and records nothing: only the grant workflow,
// once a request's reviews and policy allow it, may call it (tests reach
// it through export_test.go).
func (b *Broker) issueGrant(g grant.Grant) (string, error) {
	if g.Issuer == "" {
		g.Issuer = b.auditLog.Origin()
	}
	return grant.Issue(g, b.key)
}

// signedRequest builds a broker → agent request signed with the broker key.
func (b *Broker) signedRequest(ctx context.Context, agentID, method, rawURL string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	var n [16]byte
	rand.Read(n[:])
	nonce := hex.EncodeToString(n[:])
	at := b.now()
	sig := ed25519.Sign(b.key, protocol.CallTranscript(agentID, method, req.URL.RequestURI(), at, nonce, body))
	req.Header.Set(protocol.HeaderBrokerTime, strconv.FormatInt(at.UnixMilli(), 10))
	req.Header.Set(protocol.HeaderBrokerNonce, nonce)
	req.Header.Set(protocol.HeaderBrokerSignature, base64.RawURLEncoding.EncodeToString(sig))
	// A signed call is safe to send again on a fresh connection when a
	// kept-alive one turns out dead (the agent restarted): the agent runs
	// a call's nonce at most once. net/http retries a request carrying
	// this header, and only then.
	req.Header.Set("Idempotency-Key", nonce)
	return req, nil
}
