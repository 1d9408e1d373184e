package agentload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
)

// FleetConfig says where the broker is and how to ramp.
type FleetConfig struct {
	// APIURL and AdminToken reach the broker API, where deployments and
	// their pairing tokens are made.
	APIURL, AdminToken string
	// AgentAddr is the broker's agent API (HOST:PORT of its
	// [LoopbackPeers] listener).
	AgentAddr string
	// BrokerKey is the broker's public key, text form.
	BrokerKey string
	// Tenant owns the deployments; default "load".
	Tenant string
	// Workers is how many deployments are created and agents paired at
	// once while ramping; default 8.
	Workers int
}

// Fleet is a set of simulated agents paired with one broker, each beating
// in its own goroutine until [Fleet.Stop].
type Fleet struct {
	cfg    FleetConfig
	api    *brokerapi.Client
	hc     *http.Client
	ctx    context.Context // the agents' loops run until it ends
	cancel context.CancelFunc
	wg     sync.WaitGroup
	next   atomic.Int64 // the next agent's index
	rec    recorder

	mu     sync.Mutex
	agents []*Agent
}

// spare is the deployment whose pairing tokens [Fleet.GrowLog] issues.
const spare = "spare"

// NewFleet checks the broker API answers and creates the spare
// deployment [Fleet.GrowLog] uses.
func NewFleet(ctx context.Context, cfg FleetConfig) (*Fleet, error) {
	if cfg.Tenant == "" {
		cfg.Tenant = "load"
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	api, err := brokerapi.NewClient(config.CLI{APIURL: cfg.APIURL, Token: cfg.AdminToken})
	if err != nil {
		return nil, err
	}
	if _, err := api.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: cfg.Tenant, Name: spare}); err != nil {
		return nil, fmt.Errorf("create the spare deployment: %w", err)
	}
	fctx, cancel := context.WithCancel(context.Background())
	return &Fleet{cfg: cfg, api: api, hc: &http.Client{Timeout: time.Minute}, ctx: fctx, cancel: cancel}, nil
}

// Add creates n deployments through the broker API, pairs an agent with
// each one's pairing token, and starts each agent's loop: open a session,
// then heartbeat and witness at the interval the broker gives, as the real
// agent does. A pairing that fails (a call timing out under load, say) is
// counted ([Stats.PairFailed]) and another deployment made in its place,
// as an operator would; Add returns once n agents are paired, or with an
// error when the broker API fails or pairings fail past a tenth of n.
func (f *Fleet) Add(ctx context.Context, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var left, failed atomic.Int64
	left.Store(int64(n))
	errc := make(chan error, f.cfg.Workers)
	var wg sync.WaitGroup
	for range f.cfg.Workers {
		wg.Go(func() {
			for left.Add(-1) >= 0 && ctx.Err() == nil {
				err := f.addOne(ctx)
				var pe *pairError
				if errors.As(err, &pe) && failed.Add(1) <= int64(n/10+10) {
					f.rec.pairFailed(ctx, err)
					left.Add(1)
					continue
				}
				if err != nil {
					errc <- err
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// pairError is a failed pairing, as opposed to a failure of the broker
// API that makes deployments.
type pairError struct{ err error }

func (e *pairError) Error() string { return e.err.Error() }
func (e *pairError) Unwrap() error { return e.err }

func (f *Fleet) addOne(ctx context.Context) error {
	i := int(f.next.Add(1) - 1)
	name := fmt.Sprintf("a%05d", i)
	res, err := f.api.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: f.cfg.Tenant, Name: name})
	if err != nil {
		return fmt.Errorf("create deployment %s/%s: %w", f.cfg.Tenant, name, err)
	}
	a, err := NewAgent(f.cfg.AgentAddr, SourceAddr(i), f.cfg.BrokerKey)
	if err != nil {
		return err
	}
	if err := a.Pair(ctx, res.Pairing.Token); err != nil {
		a.Close()
		return &pairError{fmt.Errorf("agent %d: %w", i, err)}
	}
	f.mu.Lock()
	f.agents = append(f.agents, a)
	f.mu.Unlock()
	f.wg.Go(func() { f.beat(a) })
	return nil
}

// beat is one agent's loop, the real agent's heartbeat loop without the
// data plane: a failed beat is retried after a second; a refusal stops
// the agent, as it stops a real one.
func (f *Fleet) beat(a *Agent) {
	defer a.Close()
	ctx := f.ctx
	for {
		var err error
		if a.Token() == "" {
			err = a.OpenSession(ctx)
			f.rec.session(ctx, err)
		}
		if err == nil {
			t0 := time.Now()
			err = a.Heartbeat(ctx)
			f.rec.heartbeat(ctx, time.Since(t0), err)
		}
		if Refused(err) {
			f.rec.refusal(ctx, err)
			return
		}
		if err == nil {
			t0 := time.Now()
			cosigned, werr := a.Witness(ctx)
			f.rec.witness(ctx, time.Since(t0), cosigned, werr)
		}
		d := a.Interval()
		if d <= 0 {
			d = 5 * time.Second
		}
		if err != nil {
			d = min(d, time.Second)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Len is how many agents are paired.
func (f *Fleet) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.agents)
}

// Stop ends every agent's loop and waits for them.
func (f *Fleet) Stop() {
	f.cancel()
	f.wg.Wait()
}

// GrowLog makes the broker append one audited event (a pairing token
// issued for the spare deployment), so that the next checkpoint is larger
// and every agent, as a witness, fetches a consistency proof and cosigns
// it at its next heartbeat.
func (f *Fleet) GrowLog(ctx context.Context) error {
	if _, err := f.api.NewPairingToken(ctx, f.cfg.Tenant+"/"+spare); err != nil {
		return fmt.Errorf("grow the audit log: %w", err)
	}
	return nil
}

// Window returns what the agents recorded since the previous call, and
// starts a new window.
func (f *Fleet) Window() Stats { return f.rec.take() }

// Online counts the fleet's deployments whose agent the broker shows
// online, and those with a paired agent, as GET /api/v1/deployments
// (`broker deployment list`) reports them.
func (f *Fleet) Online(ctx context.Context) (online, total int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(f.cfg.APIURL, "/")+"/api/v1/deployments", nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+f.cfg.AdminToken)
	res, err := f.hc.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("list deployments: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("list deployments: %s", res.Status)
	}
	var list brokerapi.ListDeploymentsResponse
	if err := json.NewDecoder(io.LimitReader(res.Body, 256<<20)).Decode(&list); err != nil {
		return 0, 0, fmt.Errorf("list deployments: %w", err)
	}
	for _, d := range list.Deployments {
		if d.Tenant != f.cfg.Tenant || d.Name == spare || d.AgentStatus == brokerapi.StatusUnpaired {
			continue // a deployment whose pairing failed was replaced
		}
		total++
		if d.AgentStatus == brokerapi.StatusOnline {
			online++
		}
	}
	return online, total, nil
}

// API is the fleet's broker API client.
func (f *Fleet) API() *brokerapi.Client { return f.api }

// Stats is what the agents saw in one window.
type Stats struct {
	Heartbeats int // heartbeats answered
	// Failed counts heartbeats and sessions that failed (timeouts,
	// broker errors); Refused counts agents the broker refused for good.
	Failed, Refused int
	// WitnessFailed counts witness steps that failed: the agent logs
	// them and tries again at its next heartbeat, online all the while.
	WitnessFailed int
	// PairFailed counts pairings that failed (each replaced by another
	// deployment and agent).
	PairFailed   int
	Sessions     int // sessions opened
	Cosignatures int // cosignatures delivered
	// Latencies are the answered heartbeats' round trips, sorted;
	// Witness the witness steps' (checkpoint, proof check, cosignature)
	// that delivered a cosignature.
	Latencies, Witness []time.Duration
	// Errors holds the first few failures, for the report.
	Errors []string
}

// Quantile is the q-quantile (0 to 1) of d, sorted; 0 when empty.
func Quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(int(q*float64(len(d))), len(d)-1)]
}

// recorder collects the agents' observations; the zero value is ready.
type recorder struct {
	mu sync.Mutex
	s  Stats
}

const maxErrors = 10

// keepLocked keeps msg among the first maxErrors errors the run reports.
func (r *recorder) keepLocked(msg string) {
	if len(r.s.Errors) < maxErrors {
		r.s.Errors = append(r.s.Errors, msg)
	}
}

func (r *recorder) failLocked(err error) {
	r.s.Failed++
	r.keepLocked(err.Error())
}

// Observations made after the fleet's context ended (Stop cuts calls
// short) are not failures of the broker.
func (r *recorder) session(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if !Refused(err) {
			r.failLocked(err)
		}
		return
	}
	r.s.Sessions++
}

func (r *recorder) heartbeat(ctx context.Context, d time.Duration, err error) {
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if !Refused(err) {
			r.failLocked(err)
		}
		return
	}
	r.s.Heartbeats++
	r.s.Latencies = append(r.s.Latencies, d)
}

func (r *recorder) witness(ctx context.Context, d time.Duration, cosigned bool, err error) {
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.s.WitnessFailed++
		r.keepLocked("witness: " + err.Error())
		return
	}
	if cosigned {
		r.s.Cosignatures++
		r.s.Witness = append(r.s.Witness, d)
	}
}

func (r *recorder) pairFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.PairFailed++
	r.keepLocked(err.Error())
}

func (r *recorder) refusal(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.Refused++
	r.keepLocked("refused: " + err.Error())
}

func (r *recorder) take() Stats {
	r.mu.Lock()
	s := r.s
	r.s = Stats{}
	r.mu.Unlock()
	slices.Sort(s.Latencies)
	slices.Sort(s.Witness)
	return s
}
