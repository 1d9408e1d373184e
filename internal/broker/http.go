package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tetherhq/tether/internal/agentapi"
)

// apiError is an error with the HTTP status and stable code it maps to.
// Handlers return them; only writeError turns them into responses.
type apiError struct {
	status  int
	code    string
	message string
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
		ae = &apiError{status: http.StatusInternalServerError, code: "internal", message: "internal error; the broker log has details"}
	}
	writeJSON(w, ae.status, agentapi.Error{Error: agentapi.ErrorBody{Code: ae.code, Message: ae.message}})
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
