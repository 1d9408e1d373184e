// Package protocol is the protocol between the broker and its agents over
// the tailnet: the messages, the ports, and the exact byte strings each side
// signs with its Ed25519 key.
//
// Trust has two layers in both directions. The broker answers agent calls
// only from tailnet peers (WhoIs) and, after pairing, only from the node the
// agent paired from holding the agent's key. The agent answers broker calls
// only from the broker's pinned tailnet node and only when signed with the
// broker's pinned key.
package protocol

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Tailnet ports. Both live only in the nodes' userspace network stacks.
const (
	BrokerPort = 80 // the broker's agent API on its tailnet address
	AgentPort  = 80 // the agent's API on its tailnet address
)

// Paths of the broker's agent API and of the agent's API.
const (
	PathPair      = "/agent/v1/pair"
	PathChallenge = "/agent/v1/challenge"
	PathSession   = "/agent/v1/session"
	PathProve     = "/agent/v1/prove"
	PathHeartbeat = "/agent/v1/heartbeat"

	PathCheckpoint = "/agent/v1/checkpoint"
	PathCosign     = "/agent/v1/cosign"
	PathEvents     = "/agent/v1/events"

	PathAgentPing       = "/v1/ping"
	PathClickHouseQuery = "/v1/clickhouse/query"
	PathPrometheus      = "/v1/prometheus/" // followed by the Prometheus API path, e.g. api/v1/query
	PathRevoke          = "/v1/grants/revoke"
)

// RevokeRequest tells an agent a grant is revoked.
type RevokeRequest struct {
	GrantID string    `json:"grant_id"`
	Until   time.Time `json:"until,omitempty"` // the grant's expiry: the agent may forget it after
}

// RevokeResponse says how many calls in flight the revocation cut off,
// and how many ClickHouse queries it killed.
type RevokeResponse struct {
	CutOff int `json:"cut_off"`
	Killed int `json:"killed"` // ClickHouse queries killed by their query ID
}

// HeaderGrant carries the grant (a compact JWS) on data-plane calls.
const HeaderGrant = "Tether-Grant"

// TrailerStopped is the HTTP trailer of a data-plane answer that stopped
// before its end, saying why in words the engineer may read ("stopped:
// the grant was revoked"). An answer without it ended normally.
const TrailerStopped = "Tether-Stopped"

// TrailerResult is the HTTP trailer that ends every successful (2xx)
// data-plane answer: "complete" when the agent sent the whole answer, or
// "incomplete; reason=<words>" when it stopped early. The agent sets it
// after the last byte and the broker passes it on; a client that reads an
// answer without it (the connection broke, an agent or broker too old to
// send it, a proxy that dropped it) must treat the answer as incomplete.
const TrailerResult = "Tether-Result"

// ResultComplete is the [TrailerResult] value of a whole answer.
const ResultComplete = "complete"

// ResultIncomplete is the [TrailerResult] value of an answer stopped
// early for reason.
func ResultIncomplete(reason string) string { return "incomplete; reason=" + reason }

// ResultReason reads a [TrailerResult] value: complete, or the reason the
// answer is incomplete ("" with complete).
func ResultReason(v string) (complete bool, reason string) {
	if v == ResultComplete {
		return true, ""
	}
	if r, ok := strings.CutPrefix(v, "incomplete; reason="); ok && r != "" {
		return false, r
	}
	if v == "" {
		return false, "the answer carried no " + TrailerResult + " trailer saying it was complete (the connection broke, or an agent, broker or proxy on the way is too old or dropped it)"
	}
	return false, "the answer's " + TrailerResult + " trailer is not understood"
}

// ClickHouseQuery is the body of a data-plane SQL call.
type ClickHouseQuery struct {
	SQL    string `json:"sql"`
	Format string `json:"format,omitempty"` // output format when the SQL names none; default TabSeparatedWithNames
}

// MaxBody bounds every request body of the agent protocol, and every
// response body but the data plane's streamed results. It leaves room for
// a 64 KiB query in its JSON envelope.
const MaxBody = 256 << 10

// PairingTokenPrefix starts every pairing token, so a token pasted in the
// wrong place is recognisable.
const PairingTokenPrefix = "tpt_"

// NewPairingToken returns a fresh token (32 random bytes) and its hash.
func NewPairingToken() (token string, hash []byte) {
	var b [32]byte
	rand.Read(b[:])
	h := sha256.Sum256(b[:])
	return PairingTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), h[:]
}

// ErrMalformedToken reports a pairing token that is not of our format.
var ErrMalformedToken = errors.New("malformed pairing token: want tpt_ followed by 43 base64url characters, as printed by 'broker deployment create'")

// HashPairingToken parses token and returns the hash the broker stores.
func HashPairingToken(token string) ([]byte, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(token), PairingTokenPrefix)
	if !ok {
		return nil, ErrMalformedToken
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) != 32 {
		return nil, ErrMalformedToken
	}
	h := sha256.Sum256(b)
	return h[:], nil
}

// KeyPrefix starts the text form of an Ed25519 public key.
const KeyPrefix = "ed25519:"

// EncodePublicKey returns the text form of k: "ed25519:" + base64url.
func EncodePublicKey(k ed25519.PublicKey) string {
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(k)
}

// ParsePublicKey parses the text form of an Ed25519 public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	rest, ok := strings.CutPrefix(s, KeyPrefix)
	if !ok {
		return nil, fmt.Errorf("public key %q: want %s followed by 43 base64url characters", abbrev(s), KeyPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key %q: want %s followed by 43 base64url characters", abbrev(s), KeyPrefix)
	}
	return ed25519.PublicKey(b), nil
}

func abbrev(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// PairRequest is what an agent presents to pair.
type PairRequest struct {
	Token     string `json:"token"`
	PublicKey string `json:"public_key"` // the agent's key, text form
	Nonce     []byte `json:"nonce"`      // 32 random bytes, echoed in the signature
	Version   string `json:"version"`
}

// PairResponse is the broker's answer to a successful pairing. Signature
// is the broker key's signature over [PairTranscript].
type PairResponse struct {
	AgentID      string `json:"agent_id"`
	DeploymentID string `json:"deployment_id"`
	Tenant       string `json:"tenant"`
	Name         string `json:"name"`
	BrokerNodeID string `json:"broker_node_id"`
	Signature    []byte `json:"signature"`
}

// PairTranscript is what the broker signs when pairing succeeds, binding
// its key to the agent's key, identity and the agent's fresh nonce.
func PairTranscript(r PairResponse, agentKey string, nonce []byte) []byte {
	return transcript("pair", r.AgentID, r.DeploymentID, r.Tenant, r.Name, r.BrokerNodeID, agentKey, hex.EncodeToString(nonce))
}

// ChallengeRequest asks the broker for a challenge to sign.
type ChallengeRequest struct {
	AgentID string `json:"agent_id"`
}

// ChallengeResponse carries a single-use challenge, signed by the broker
// over [ChallengeTranscript] so that the agent knows it speaks to the
// broker it paired with.
type ChallengeResponse struct {
	Challenge []byte    `json:"challenge"`
	ExpiresAt time.Time `json:"expires_at"`
	Signature []byte    `json:"signature"`
}

// ChallengeTranscript is what the broker signs when it issues a challenge.
func ChallengeTranscript(agentID string, challenge []byte) []byte {
	return transcript("challenge", agentID, hex.EncodeToString(challenge))
}

// ProveRequest asks a broker node to prove that it holds the broker's key.
// Any tailnet node may ask; the answer binds the proof to both nodes.
type ProveRequest struct {
	Nonce []byte `json:"nonce"` // 32 random bytes from the caller
}

// ProveResponse is a broker node's proof: the broker key's signature over
// [ProveTranscript] for its own node ID and the caller's, as the tailnet
// identifies them. A node that relays another broker node's proof cannot
// pass it off as its own: the proof names the node that signed it.
type ProveResponse struct {
	BrokerNodeID string `json:"broker_node_id"`
	Signature    []byte `json:"signature"`
}

// ProveNonceLen is the length of [ProveRequest.Nonce].
const ProveNonceLen = 32

// ProveTranscript is what a broker node signs to prove its key to the
// tailnet node callerNodeID.
func ProveTranscript(nonce []byte, brokerNodeID, callerNodeID string) []byte {
	return transcript("prove", hex.EncodeToString(nonce), brokerNodeID, callerNodeID)
}

// SessionRequest answers a challenge. Signature is the agent key's
// signature over [SessionTranscript].
type SessionRequest struct {
	AgentID   string `json:"agent_id"`
	Challenge []byte `json:"challenge"`
	Signature []byte `json:"signature"`
}

// SessionTranscript is what the agent signs to open a session.
func SessionTranscript(agentID string, challenge []byte) []byte {
	return transcript("session", agentID, hex.EncodeToString(challenge))
}

// SessionResponse opens a session: Token authenticates the agent's calls
// until ExpiresAt, from the same tailnet node only.
type SessionResponse struct {
	Token             string    `json:"token"`
	ExpiresAt         time.Time `json:"expires_at"`
	HeartbeatInterval Duration  `json:"heartbeat_interval"`
}

// Heartbeat is what the agent reports every interval.
type Heartbeat struct {
	Version   string            `json:"version"`
	UptimeMS  int64             `json:"uptime_ms"`
	TailnetIP string            `json:"tailnet_ip"`
	Upstreams map[string]string `json:"upstreams,omitempty"`
	// WitnessRefusal, when set, says why the agent, as the customer's
	// witness of the broker's audit log, refuses every data-plane call:
	// the log is smaller than, or forks from, the one it cosigned.
	WitnessRefusal string `json:"witness_refusal,omitempty"`
	// Approval is the customer's approval authority the agent enforces;
	// nil (from an agent that enforces none, or predates it) means the
	// agent serves any grant the broker key signed.
	Approval *ApprovalAuthority `json:"approval,omitempty"`
	// SentAt is the agent's clock as it sent the heartbeat (t0 of the
	// exchange [EstimateClock] reads); zero from an agent that predates
	// it. Alone it gives the broker a one-way estimate of the agent's
	// clock offset, off by the network's one-way delay.
	SentAt time.Time `json:"sent_at,omitzero"`
	// Clock is the agent's clock offset as the previous heartbeat's
	// exchange measured it (the agent alone knows all four times); nil on
	// an agent's first heartbeat.
	Clock *ClockOffset `json:"clock,omitempty"`
}

// ClockOffset is an NTP-style estimate of how far the agent's clock is
// from the broker's.
type ClockOffset struct {
	// OffsetUS is the agent's clock minus the broker's, in microseconds:
	// positive when the agent's clock is ahead.
	OffsetUS int64 `json:"offset_us"`
	// RTTUS is the round trip of the exchange that measured it, less the
	// broker's time answering, in microseconds. The true offset lies
	// within OffsetUS ± RTTUS/2.
	RTTUS int64 `json:"rtt_us"`
}

// Offset is o's offset as a duration.
func (o ClockOffset) Offset() time.Duration { return time.Duration(o.OffsetUS) * time.Microsecond }

// RTT is o's round trip as a duration.
func (o ClockOffset) RTT() time.Duration { return time.Duration(o.RTTUS) * time.Microsecond }

// MaxClockOffset bounds a reported [ClockOffset.OffsetUS] either way: a
// century, which holds an agent whose clock restarted at 1970 and stays
// well within a time.Duration.
const MaxClockOffset = 100 * 365 * 24 * time.Hour

// MaxClockRTT bounds a reported [ClockOffset.RTTUS]: the agent gives up
// on a heartbeat long before.
const MaxClockRTT = time.Minute

// MaxCallSkew is how far a signed broker → agent call's time may be from
// the agent's clock: beyond it the agent refuses the call (queries, pings;
// a revocation push is accepted whatever the skew).
const MaxCallSkew = time.Minute

// ClockSkewWarn is the clock offset between agent and broker beyond which
// both sides warn: a quarter of [MaxCallSkew], so that a drifting clock
// (a free-running one drifts a few seconds a day) is reported days before
// the agent refuses the broker's calls.
const ClockSkewWarn = 15 * time.Second

// EstimateClock is the NTP estimate of the agent's clock offset from one
// heartbeat exchange: t0 the agent's send time, t1 and t2 the broker's
// receive and answer times, t3 the agent's receive time. The offset is
// ((t0-t1)+(t3-t2))/2, the agent's clock minus the broker's; the round
// trip (t3-t0)-(t2-t1) bounds its error to ± half of it. ok is false when
// the broker's times are missing or out of order.
func EstimateClock(t0, t1, t2, t3 time.Time) (o ClockOffset, ok bool) {
	if t1.IsZero() || t2.IsZero() || t2.Before(t1) {
		return ClockOffset{}, false
	}
	// Halved before adding: Sub saturates, a sum of two saturated
	// durations would overflow.
	offset := t0.Sub(t1)/2 + t3.Sub(t2)/2
	rtt := max(t3.Sub(t0)-t2.Sub(t1), 0)
	offset = min(max(offset, -MaxClockOffset), MaxClockOffset)
	return ClockOffset{OffsetUS: offset.Microseconds(), RTTUS: min(rtt, MaxClockRTT).Microseconds()}, true
}

// MaxWitnessRefusal bounds [Heartbeat.WitnessRefusal], in bytes.
const MaxWitnessRefusal = 1024

// ApprovalAuthority summarizes the customer's approval authority an agent
// enforces: whose ID tokens count as approvals (Issuer, Audience, Group),
// how many distinct approvers a grant needs, and whether break-glass
// grants are served. An empty Issuer means no authority, with only
// break-glass grants refused (BreakGlass deny).
type ApprovalAuthority struct {
	Issuer     string `json:"issuer,omitempty"`
	Audience   string `json:"audience,omitempty"`
	Group      string `json:"group,omitempty"`
	Required   int    `json:"required,omitempty"`
	BreakGlass string `json:"break_glass"` // BreakGlassDeny or BreakGlassAllow
}

// Values of [ApprovalAuthority.BreakGlass].
const (
	BreakGlassDeny  = "deny"
	BreakGlassAllow = "allow"
)

// MaxApprovalField bounds each text field of [ApprovalAuthority], in bytes.
const MaxApprovalField = 512

// HeartbeatResponse acknowledges a heartbeat. CheckpointSize is the size
// of the audit log's latest signed checkpoint: the agent, as the
// customer's witness, fetches and cosigns it when it grew.
type HeartbeatResponse struct {
	HeartbeatInterval Duration `json:"heartbeat_interval"`
	CheckpointSize    uint64   `json:"checkpoint_size"`
	// ReceivedAt and AnsweredAt are the broker's clock as it received the
	// heartbeat and as it answered (t1 and t2 of [EstimateClock]); zero
	// from a broker that predates them.
	ReceivedAt time.Time `json:"received_at,omitzero"`
	AnsweredAt time.Time `json:"answered_at,omitzero"`
}

// CheckpointRequest asks for the audit log's latest checkpoint and a
// consistency proof from the size the agent last cosigned.
type CheckpointRequest struct {
	SinceSize uint64 `json:"since_size"`
}

// CheckpointResponse is the latest signed checkpoint note and the
// consistency proof from the requested size to it.
type CheckpointResponse struct {
	Note  string   `json:"note"`
	Size  uint64   `json:"size"`
	Proof [][]byte `json:"proof"`
}

// CosignRequest hands the broker the checkpoint note carrying the agent's
// witness signature.
type CosignRequest struct {
	Size uint64 `json:"size"`
	Note string `json:"note"`
}

// EventsRequest delivers events from the agent's audit spool, with the IDs
// and times the agent gave them.
type EventsRequest struct {
	Events []json.RawMessage `json:"events"`
}

// EventsResponse says how many delivered events were new to the broker,
// and how many it refused (recorded as a refusal naming the agent, and
// not stored). Refused events are not delivered again: the agent drops
// them from its spool with the rest of the delivery.
type EventsResponse struct {
	Received int `json:"received"`
	Stored   int `json:"stored"`
	Refused  int `json:"refused,omitempty"`
}

// MaxEventsPerDelivery bounds one EventsRequest.
const MaxEventsPerDelivery = 500

// WitnessName is the note key name an agent cosigns checkpoints under.
func WitnessName(agentID string) string { return "tether-witness/" + agentID }

// PingResponse is the agent's answer to a broker ping.
type PingResponse struct {
	AgentID  string `json:"agent_id"`
	Version  string `json:"version"`
	UptimeMS int64  `json:"uptime_ms"`
}

// Headers of a signed broker → agent call.
const (
	HeaderBrokerTime      = "Tether-Broker-Time"
	HeaderBrokerNonce     = "Tether-Broker-Nonce"
	HeaderBrokerSignature = "Tether-Broker-Signature"
)

// CallTranscript is what the broker signs for each call to an agent:
// audience, method, request URI (path and query), time, a nonce and the
// body's hash.
func CallTranscript(agentID, method, path string, at time.Time, nonce string, body []byte) []byte {
	h := sha256.Sum256(body)
	return transcript("call", agentID, method, path, strconv.FormatInt(at.UnixMilli(), 10), nonce, hex.EncodeToString(h[:]))
}

func transcript(kind string, fields ...string) []byte {
	var b strings.Builder
	b.WriteString("tether/")
	b.WriteString(kind)
	b.WriteString("/v1")
	for _, f := range fields {
		b.WriteByte('\n')
		b.WriteString(f)
	}
	return []byte(b.String())
}

// Duration is a time.Duration that marshals as a Go duration string.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a Go duration such as 5s or 1m", b)
	}
	*d = Duration(v)
	return nil
}
