package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"

	"github.com/tetherhq/tether/internal/protocol"
)

// ErrGrantRevoked is why a call in flight was cut off by a revocation.
var ErrGrantRevoked = errors.New("grant revoked")

// ErrGrantExpired is why a call in flight was cut off at its grant's expiry.
var ErrGrantExpired = errors.New("grant expired")

// Error answers a call with the agent API's JSON error.
func Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(brokerapi.ErrorEnvelope{Error: brokerapi.ErrorBody{Code: code, Message: msg}})
}

// StopReason says, in words for the engineer, why a call under a grant
// was stopped by the agent: revoked, expired, or its caller went away.
// ok is false while the call's context is live.
func StopReason(ctx context.Context) (code, msg string, ok bool) {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, ErrGrantRevoked):
		return "grant_revoked", "stopped: the grant was revoked", true
	case errors.Is(cause, ErrGrantExpired):
		return "grant_expired", "stopped: the grant expired", true
	case ctx.Err() != nil:
		return "cancelled", "stopped: the caller went away", true
	}
	return "", "", false
}

// UpstreamFailed answers a call whose upstream gave no answer. The
// engineer is told what happened; the upstream's address, the limits the
// agent forces on it and the transport's error go to the agent's log
// only.
func UpstreamFailed(w http.ResponseWriter, ctx context.Context, log *slog.Logger, upstream, code, callID string, err error) {
	if scode, msg, ok := StopReason(ctx); ok {
		log.Info("call stopped before "+upstream+" answered", "call", callID, "reason", msg)
		Error(w, http.StatusForbidden, scode, msg)
		return
	}
	var te *TimeoutError
	if errors.As(err, &te) {
		log.Warn(upstream+" did not answer in time", "call", callID, "after", te.After, "err", err)
		Error(w, http.StatusGatewayTimeout, "upstream_timeout", fmt.Sprintf("%s did not answer the agent within %v (the query's time limit and a grace); it may be hung or overloaded (the agent's log has its address)", upstream, te.After))
		return
	}
	log.Warn(upstream+" did not answer", "call", callID, "err", err)
	Error(w, http.StatusBadGateway, code, upstream+" is unreachable from the agent (the agent's log has the details)")
}

// TimeoutError is the error of an upstream call the agent's client gave
// up on: the upstream did not answer within After.
type TimeoutError struct {
	After time.Duration
	Err   error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("no answer within %v: %v", e.After, e.Err)
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// StoppedEarly ends an answer that stopped mid-stream with the
// [protocol.TrailerStopped] trailer saying why, so that it is read as
// incomplete; the detail goes to the agent's log. The answer must have
// announced the trailer.
func StoppedEarly(w http.ResponseWriter, ctx context.Context, log *slog.Logger, upstream, callID string, err error) {
	_, msg, ok := StopReason(ctx)
	if !ok {
		msg = "stopped: " + upstream + " stopped answering"
	}
	log.Info("answer stopped early", "call", callID, "reason", msg, "err", err)
	w.Header().Set(protocol.TrailerStopped, msg)
}

// Stream copies src to w as it arrives, shows each piece to observe (if
// not nil) and counts the bytes. Data is flushed once the source has been
// quiet for flushDelay, not after every read: a small answer then leaves
// in one packet with the end of the response, while a slow stream still
// reaches the engineer within milliseconds of each chunk. A writer whose
// flush returns [ErrFlushLater] is asked again flushDelay later.
func Stream(w http.ResponseWriter, src io.Reader, observe io.Writer) (n int64, err error) {
	rc := http.NewResponseController(w)
	type chunk struct {
		buf []byte
		k   int
		err error
	}
	chunks := make(chan chunk)
	free := make(chan []byte, 2)
	free <- make([]byte, 64<<10)
	free <- make([]byte, 64<<10)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			k, rerr := src.Read(buf)
			select {
			case chunks <- chunk{buf, k, rerr}:
			case <-stop:
				return
			}
			if rerr != nil {
				return
			}
		}
	}()
	var flush <-chan time.Time
	for {
		select {
		case <-flush:
			flush = nil
			if errors.Is(rc.Flush(), ErrFlushLater) {
				flush = time.After(flushDelay)
			}
			continue
		case c := <-chunks:
			if c.k > 0 {
				if observe != nil {
					observe.Write(c.buf[:c.k])
				}
				if _, werr := w.Write(c.buf[:c.k]); werr != nil {
					return n, werr
				}
				n += int64(c.k)
				if flush == nil {
					flush = time.After(flushDelay)
				}
			}
			free <- c.buf
			if errors.Is(c.err, io.EOF) {
				return n, nil
			}
			if c.err != nil {
				return n, c.err
			}
		}
	}
}

// ErrFlushLater is what a writer's flush returns when it holds what was
// written for now (a small answer waiting to see whether it ends soon):
// [Stream] asks it to flush again a little later.
var ErrFlushLater = errors.New("flush later")

// flushDelay is how long streamed data may wait for more before it is
// sent.
const flushDelay = 2 * time.Millisecond
