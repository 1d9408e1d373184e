package brokerapi

import (
	"encoding/json"
	"io"
	"net/http"
)

// ErrorFromResponse reads a failed answer from [Client.DataPlane] (its
// body bounded by [MaxBody]) and returns it as an *Error with the API's
// own code and message when the body is the API's JSON error, or one
// naming the status otherwise. It does not close the body.
func ErrorFromResponse(res *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(res.Body, MaxBody))
	return responseError(res, b)
}

// DecodeError returns the API error body holds, a JSON error of the API
// (`{"error": {"code", "message"}}`), and false when body is something
// else, such as Prometheus's own error JSON. The local proxies use it to
// translate the broker's errors into what their clients understand.
func DecodeError(status int, body []byte) (*Error, bool) {
	var e ErrorEnvelope
	if json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
		return nil, false
	}
	return &Error{Status: status, Code: e.Error.Code, Message: e.Error.Message}, true
}
