package broker

import (
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/agentapi"
	"github.com/tetherhq/tether/internal/grant"
)

// handleDataPlane is the data-plane passthrough: a call carrying a grant
// goes to the deployment's agent over the tailnet, where the grant is
// verified against the broker's key and the call guarded; the answer
// streams back.
func (b *Broker) handleDataPlane(w http.ResponseWriter, r *http.Request) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	scope := grant.ScopeClickHouse
	if strings.HasSuffix(r.Pattern, "{rest...}") {
		scope = grant.ScopePrometheus
	}
	// The broker checks the grant is live and the caller's; the agent
	// checks it again against the key it pinned.
	g, err := b.liveGrant(r.Context(), r, d.ID, scope)
	if err != nil {
		return err
	}
	tok := g.Token
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, agentapi.MaxBody))
	if err != nil {
		return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "request body is larger than %d bytes", agentapi.MaxBody)
	}
	target := agentapi.PathClickHouseQuery
	if strings.HasSuffix(r.Pattern, "{rest...}") {
		// The agent's guard decides on the target exactly as the caller
		// wrote it: pass the escaped path and query through unchanged.
		raw := r.URL.EscapedPath()
		prefix := "/api/v1/deployments/" + r.PathValue("tenant") + "/" + r.PathValue("name") + "/prometheus/"
		if len(raw) < len(prefix) {
			return errorf(http.StatusBadRequest, "bad_path", "want /api/v1/deployments/TENANT/NAME/prometheus/api/v1/…")
		}
		target = agentapi.PathPrometheus + raw[len(prefix):]
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
	}
	h := http.Header{agentapi.HeaderGrant: {tok}}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		h.Set("Content-Type", ct)
	}
	if d.Agent == nil {
		return errorf(http.StatusConflict, "agent_unpaired", "deployment %s/%s has no paired agent", d.Tenant, d.Name)
	}
	res, err := b.callAgent(r.Context(), *d.Agent, r.Method, target, body, h)
	if err != nil {
		return errorf(http.StatusBadGateway, "agent_unreachable", "agent of %s/%s did not answer: %v", d.Tenant, d.Name, err)
	}
	defer res.Body.Close()
	// Results stream for as long as the grant allows, past the server's
	// default write timeout.
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{})
	for _, k := range []string{"Content-Type", "Tether-Query-Id"} {
		if v := res.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(res.StatusCode)
	buf := make([]byte, 64<<10)
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil
			}
			rc.Flush()
		}
		if rerr != nil {
			return nil
		}
	}
}
