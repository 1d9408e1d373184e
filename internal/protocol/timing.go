package protocol

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HeaderServerTiming is the W3C Server-Timing header (and trailer) every
// data-plane answer carries: each hop adds the time it spent, so that an
// engineer sees where a call's time went (broker query --timing).
const HeaderServerTiming = "Server-Timing"

// Hop names in [ServerTiming], in the order a call meets them.
const (
	TimingAuth     = "auth"     // broker: the caller's token and role
	TimingLookup   = "lookup"   // broker: the deployment and the live grant
	TimingTailnet  = "tailnet"  // broker ↔ agent round trip, less the agent's own time
	TimingAgent    = "agent"    // agent: everything before its answer's headers
	TimingGrant    = "grant"    // agent: the grant's signature, expiry and approvals
	TimingGuard    = "guard"    // agent: the guard's decision on the query
	TimingAudit    = "audit"    // agent: the query.allowed event made durable
	TimingUpstream = "upstream" // agent: the upstream's time to first byte
	TimingStream   = "stream"   // the body, from first byte to last (a trailer)
)

// maxTimings bounds the entries parsed from one header.
const maxTimings = 32

// Timing is one Server-Timing entry.
type Timing struct {
	Name string
	Dur  time.Duration
}

// ServerTiming is a Server-Timing header value.
type ServerTiming []Timing

// Add appends name's duration.
func (st *ServerTiming) Add(name string, d time.Duration) { *st = append(*st, Timing{name, max(d, 0)}) }

// Get returns the duration of name, and whether it is there.
func (st ServerTiming) Get(name string) (time.Duration, bool) {
	for _, t := range st {
		if t.Name == name {
			return t.Dur, true
		}
	}
	return 0, false
}

// String is the header's value: "auth;dur=0.213, lookup;dur=0.041",
// durations in milliseconds as the W3C format wants.
func (st ServerTiming) String() string {
	parts := make([]string, 0, len(st))
	for _, t := range st {
		parts = append(parts, t.Name+";dur="+strconv.FormatFloat(float64(t.Dur)/float64(time.Millisecond), 'f', 3, 64))
	}
	return strings.Join(parts, ", ")
}

// Human is st for people: "auth 0.21 ms, lookup 0.04 ms".
func (st ServerTiming) Human() string {
	parts := make([]string, 0, len(st))
	for _, t := range st {
		parts = append(parts, fmt.Sprintf("%s %.2f ms", t.Name, float64(t.Dur)/float64(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

// TimingFrom reads the Server-Timing of h, a header or a trailer, however
// many lines it was sent as.
func TimingFrom(h http.Header) ServerTiming {
	return ParseServerTiming(strings.Join(h.Values(HeaderServerTiming), ","))
}

// ParseServerTiming reads a Server-Timing value (several header lines
// joined with commas are one value). Entries without a name or a
// duration, or past the first 32, are skipped: timing is for people, and
// a malformed entry must not fail a call.
func ParseServerTiming(v string) ServerTiming {
	var st ServerTiming
	for _, entry := range strings.Split(v, ",") {
		if len(st) == maxTimings {
			break
		}
		fields := strings.Split(strings.TrimSpace(entry), ";")
		name := strings.TrimSpace(fields[0])
		if name == "" || len(name) > 64 {
			continue
		}
		for _, f := range fields[1:] {
			k, val, ok := strings.Cut(strings.TrimSpace(f), "=")
			if !ok || k != "dur" {
				continue
			}
			ms, err := strconv.ParseFloat(val, 64)
			if err != nil || ms < 0 || ms > 1e9 {
				break
			}
			st = append(st, Timing{name, time.Duration(ms * float64(time.Millisecond))})
			break
		}
	}
	return st
}
