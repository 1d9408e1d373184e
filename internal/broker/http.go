package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"

	"github.com/tetherhq/tether/audit"
)

// apiError is an error with the HTTP status and stable code it maps to.
// Handlers return them; only [Broker.answer] turns them into responses.
type apiError struct {
	status  int
	code    string
	message string
	retry   time.Duration // a 429's Retry-After
}

func (e *apiError) Error() string { return e.message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// Not indented: an indenting encoder would reformat embedded audit
	// events, whose exact bytes are what the Merkle tree hashes.
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		if ae = storeFullError(err); ae == nil {
			ae = &apiError{status: http.StatusInternalServerError, code: "internal", message: "internal error; the broker log has details"}
		}
	}
	if ae.retry > 0 {
		w.Header().Set("Retry-After", retryAfter(ae.retry))
	}
	writeJSON(w, ae.status, brokerapi.ErrorEnvelope{Error: brokerapi.ErrorBody{Code: ae.code, Message: ae.message}})
}

type callKey struct{}

// callState is what the edge needs to know about a call its handler did.
type callState struct {
	// failureRecorded is set when the handler recorded an event with
	// outcome failure for this call (policy.decided denied, network.*
	// failed, a refused review): that event is the refusal's record.
	failureRecorded atomic.Bool
	// start is when the call reached the API; authed when its caller
	// was authenticated and permitted (zero for public routes). The data
	// plane reports the difference as its auth hop (Server-Timing).
	start, authed time.Time
}

// withCall prepares r for [Broker.answer].
func withCall(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), callKey{}, &callState{start: time.Now()}))
}

// markAuthed notes that the call in ctx passed authentication and
// authorization.
func markAuthed(ctx context.Context) {
	if cs, ok := ctx.Value(callKey{}).(*callState); ok {
		cs.authed = time.Now()
	}
}

// authTime is how long the call in ctx took to authenticate and
// authorize its caller.
func authTime(ctx context.Context) time.Duration {
	if cs, ok := ctx.Value(callKey{}).(*callState); ok && !cs.authed.IsZero() {
		return cs.authed.Sub(cs.start)
	}
	return 0
}

// noteRecorded tells the edge that the call in ctx recorded e.
func noteRecorded(ctx context.Context, e audit.Event) {
	if cs, ok := ctx.Value(callKey{}).(*callState); ok && e.Outcome == audit.Failure {
		cs.failureRecorded.Store(true)
	}
}

// isRefusal reports whether an answer refuses the call (as opposed to the
// broker failing it): any 4xx, and an identity provider that could not
// check the caller's token.
func isRefusal(ae *apiError) bool {
	return ae.status >= 400 && ae.status < 500 || ae.code == "idp_unavailable"
}

// answer turns a handler's error into the API's answer. It is the one
// place API errors are answered, so that no refusal goes unrecorded: each
// refusal writes one audit event — auth.failed for 401, 403 and failed
// authentication (429, 503 idp_unavailable), api.refused for the other
// 4xx — unless the handler already recorded an
// event with outcome failure for the call. Repeats from one source are
// aggregated ([refusalLog]), and a source failing authentication too often
// is answered 429 with Retry-After.
//
// a is the caller when known; otherwise the source is its IP address.
func (b *Broker) answer(w http.ResponseWriter, r *http.Request, a audit.Actor, err error) {
	writeError(w, b.recordRefusal(r, a, err))
}

// recordRefusal records err as [Broker.answer] does and returns the error
// to answer with (a 429 in place of a 401 from a flooding source). The
// web console answers its refusals with pages through it.
func (b *Broker) recordRefusal(r *http.Request, a audit.Actor, err error) error {
	var ae *apiError
	if !errors.As(err, &ae) {
		return err
	}
	if !isRefusal(ae) {
		return ae
	}
	if cs, ok := r.Context().Value(callKey{}).(*callState); ok && cs.failureRecorded.Load() {
		return ae
	}
	now := b.now()
	ip := hostOf(r.RemoteAddr)
	source := "ip:" + ip
	if a.Subject != "" {
		source = "actor:" + a.Issuer + " " + a.Subject
	}
	if ae.status == http.StatusUnauthorized {
		if wait := b.refusals.failed("ip:"+ip, now); wait > 0 {
			ae = errorf(http.StatusTooManyRequests, "too_many_failures", "too many failed authentications from %s: wait %s, then sign in again ('broker login')", ip, retryAfter(wait)+"s")
			ae.retry = wait
		}
	}
	typ := audit.APIRefused
	if ae.status == http.StatusUnauthorized || ae.status == http.StatusForbidden || ae.code == "too_many_failures" || ae.code == "idp_unavailable" {
		typ = audit.AuthFailed
	}
	ev := audit.Event{
		Type: typ, Actor: a, Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Failure, Reason: ae.code,
		Details: map[string]any{
			"method": truncate(r.Method, maxAuditMethod), "path": truncate(r.URL.Path, maxAuditPath),
			"status": ae.status, "message": truncate(ae.message, maxAuditMessage),
		},
	}
	if l, ok := r.Context().Value(loadedKey{}).(*loadedRequest); ok && l.ar != nil {
		ev.Deployment, ev.RequestID = l.ar.DeploymentID, l.ar.ID
	}
	if t := r.PathValue("tenant"); t != "" {
		ev.Details["deployment"] = truncate(t+"/"+r.PathValue("name"), 128)
	}
	if es := b.refusals.admit(refusalKey{source: source, route: r.Pattern, typ: string(typ), code: ae.code}, ev, now); len(es) > 0 {
		// A client that hung up does not cancel the record of its refusal.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
		defer cancel()
		if err := b.auditLog.RecordAll(ctx, es...); err != nil {
			// The answer is a refusal either way.
			b.log.Error("audit write failed", "type", typ, "code", ae.code, "err", err)
		}
	}
	return ae
}

// flushRefusals records the aggregates of refusal windows that ended, or
// of all of them when all is set.
func (b *Broker) flushRefusals(ctx context.Context, all bool) {
	es := b.refusals.due(b.now(), all)
	if len(es) == 0 {
		return
	}
	if err := b.auditLog.RecordAll(ctx, es...); err != nil {
		b.log.Error("audit write failed: aggregated refusals", "events", len(es), "err", err)
	}
}

// decodeJSON reads a bounded JSON body into v, rejecting unknown fields
// and trailing data, with an error a person can act on.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "bad_content_type", "Content-Type %q: want application/json", ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "request body is larger than %d bytes", limit)
		case errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, "bad_json", "request body is empty: want a JSON object")
		default:
			return errorf(http.StatusBadRequest, "bad_json", "request body is not valid JSON for this endpoint: %s", strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "bad_json", "request body has data after the JSON object")
	}
	return nil
}
