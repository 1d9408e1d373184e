package agentcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/tetherhq/tether/internal/cli"
)

// healthCmd asks a running agent's loopback health address how it is,
// for probes that can run only the agent binary: a Kubernetes exec probe
// in an image without a shell, where the kubelet cannot reach loopback.
type healthCmd struct {
	Addr    string        `placeholder:"HOST:PORT" required:"" help:"the running agent's --health-addr, e.g. 127.0.0.1:8081"`
	Live    bool          `help:"succeed whenever the agent answers, also while the broker is unreachable (a liveness probe: restarting the agent does not bring the broker back)"`
	Timeout time.Duration `default:"5s" help:"how long to wait for the answer"`
}

func (healthCmd) Help() string {
	return `Exits 0 when the agent at --addr answers GET /healthz with 200 (paired, and
the broker accepts its heartbeats), 1 otherwise, printing the agent's answer.
With --live, any answer of the agent counts.`
}

// maxHealthBody bounds the health answer read.
const maxHealthBody = 4 << 10

func (c *healthCmd) run(e *env) error {
	host, _, err := net.SplitHostPort(c.Addr)
	ip, perr := netip.ParseAddr(host)
	if err != nil || perr != nil || !ip.IsLoopback() {
		return cli.Usagef("--addr %q: want the agent's loopback --health-addr, such as 127.0.0.1:8081", c.Addr)
	}
	if c.Timeout <= 0 {
		return cli.Usagef("--timeout %v: want a positive duration such as 5s", c.Timeout)
	}
	ctx, cancel := context.WithTimeout(e.ctx, c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+"/healthz", nil)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	hc := &http.Client{
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("health: no answer from the agent at %s: %w", c.Addr, errors.Unwrap(err))
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, maxHealthBody))
	var h struct {
		Status string `json:"status"`
	}
	json.Unmarshal(body, &h)
	switch {
	case res.StatusCode == http.StatusOK:
		fmt.Fprintln(e.stdout, "ok")
		return nil
	case c.Live && (res.StatusCode == http.StatusServiceUnavailable):
		fmt.Fprintf(e.stdout, "live: %s\n", h.Status)
		return nil
	case h.Status != "":
		return fmt.Errorf("health: the agent at %s says %s (%s)", c.Addr, h.Status, res.Status)
	default:
		return fmt.Errorf("health: %s answered %s, not the agent's health", c.Addr, res.Status)
	}
}
