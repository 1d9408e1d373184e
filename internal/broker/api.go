package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
)

// apiHandler routes the API: every route of the authorization table
// ([Endpoints]), the dev identity provider and web login when present,
// health and metrics.
func (b *Broker) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	for _, e := range Endpoints() {
		mux.Handle(e.Pattern, b.authorize(e))
	}
	if b.devIdP != nil {
		mux.Handle(devIdPPath+"/", b.devIdP)
	}
	b.web.Register(mux)
	b.registerUI(mux)
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusSeeOther))
	// Metrics carry no secrets and no customer data; scrapers need no token.
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.answer(w, r, audit.Actor{}, errorf(http.StatusNotFound, "not_found", "no API endpoint %s %s", r.Method, truncate(r.URL.Path, maxAuditPath)))
	})
	return mux
}

// record writes an audit event; failing to is an internal error that
// stops the action it records.
func (b *Broker) record(ctx context.Context, e audit.Event) error {
	if err := b.auditLog.Record(ctx, e); err != nil {
		b.log.Error("audit write failed", "type", e.Type, "err", err)
		return errorf(http.StatusInternalServerError, "audit_unavailable", "the audit log could not be written, so the action was not taken")
	}
	noteRecorded(ctx, e)
	return nil
}

func (b *Broker) handleBrokerInfo(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, brokerapi.BrokerInfo{
		Version:     b.cfg.Version,
		TailnetName: b.self.Name,
		BrokerKey:   protocol.EncodePublicKey(b.PublicKey()),
		ControlURL:  b.controlURL,
	})
	return nil
}

var regionRE = regexp.MustCompile(`^[a-z]{2,}(-[a-z0-9]+)*-[0-9]+$`)

func validateDeploymentName(tenant, name, region string) error {
	if !names.IsLabel(tenant) {
		return errorf(http.StatusBadRequest, "invalid_tenant", "tenant %q is not a DNS label: want 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'", tenant)
	}
	if !names.IsLabel(name) {
		return errorf(http.StatusBadRequest, "invalid_name", "name %q is not a DNS label: want 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'", name)
	}
	if region != "" && (len(region) > 32 || !regionRE.MatchString(region)) {
		return errorf(http.StatusBadRequest, "invalid_region", "region %q: want a cloud region such as us-east-1 or eu-central-2", region)
	}
	return nil
}

func (b *Broker) handleCreateDeployment(w http.ResponseWriter, r *http.Request) error {
	var req brokerapi.CreateDeploymentRequest
	if err := decodeJSON(w, r, brokerapi.MaxBody, &req); err != nil {
		return err
	}
	res, err := b.createDeployment(r, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, res)
	return nil
}

// createDeployment creates a deployment and its first pairing token,
// audited; the API and the web console both call it.
func (b *Broker) createDeployment(r *http.Request, req brokerapi.CreateDeploymentRequest) (brokerapi.CreateDeploymentResponse, error) {
	if err := validateDeploymentName(req.Tenant, req.Name, req.Region); err != nil {
		return brokerapi.CreateDeploymentResponse{}, err
	}
	now := b.now()
	d := store.Deployment{ID: uuid.NewString(), Tenant: req.Tenant, Name: req.Name, Region: req.Region, CreatedAt: now}
	token, tok := b.newPairingToken(d.ID, now)
	if err := b.store.CreateDeployment(r.Context(), d, tok); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return brokerapi.CreateDeploymentResponse{}, errorf(http.StatusConflict, "deployment_exists", "tenant %q already has a deployment named %q: pick another name, or use 'broker deployment show %s/%s'", d.Tenant, d.Name, d.Tenant, d.Name)
		}
		return brokerapi.CreateDeploymentResponse{}, fmt.Errorf("create deployment: %w", err)
	}
	if err := b.record(r.Context(), audit.Event{
		Type: audit.DeploymentCreated, Actor: actorOf(r), Deployment: d.ID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success,
		Details: map[string]any{"tenant": d.Tenant, "name": d.Name, "region": d.Region},
	}); err != nil {
		return brokerapi.CreateDeploymentResponse{}, err
	}
	return brokerapi.CreateDeploymentResponse{
		Deployment: b.view(store.DeploymentStatus{Deployment: d}),
		Pairing:    brokerapi.PairingToken{DeploymentID: d.ID, Token: token, ExpiresAt: tok.ExpiresAt.UTC()},
	}, nil
}

func (b *Broker) newPairingToken(deploymentID string, now time.Time) (string, store.PairingToken) {
	token, hash := protocol.NewPairingToken()
	return token, store.PairingToken{Hash: hash, DeploymentID: deploymentID, CreatedAt: now, ExpiresAt: now.Add(b.cfg.PairingTTL)}
}

func (b *Broker) handleListDeployments(w http.ResponseWriter, r *http.Request) error {
	ds, err := b.store.ListDeployments(r.Context())
	if err != nil {
		return fmt.Errorf("list deployments: %w", err)
	}
	p := principalFrom(r.Context())
	out := brokerapi.ListDeploymentsResponse{Deployments: make([]brokerapi.Deployment, 0, len(ds))}
	for _, d := range ds {
		if p.CanActOnTenant(d.Tenant) {
			out.Deployments = append(out.Deployments, b.view(d))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// lookup finds the deployment named by the request path: {id} or
// {tenant}/{name}.
func (b *Broker) lookup(r *http.Request) (store.DeploymentStatus, error) {
	var (
		d   store.DeploymentStatus
		err error
		ref string
	)
	if id := r.PathValue("id"); id != "" {
		ref = id
		if _, perr := uuid.Parse(id); perr != nil {
			return d, errorf(http.StatusBadRequest, "invalid_deployment", "deployment %q: want a deployment ID (a UUID, as printed by 'deployment create') or TENANT/NAME", id)
		}
		d, err = b.store.GetDeployment(r.Context(), id)
	} else {
		tenant, name := r.PathValue("tenant"), r.PathValue("name")
		ref = tenant + "/" + name
		if verr := validateDeploymentName(tenant, name, ""); verr != nil {
			return d, verr
		}
		d, err = b.store.GetDeploymentByName(r.Context(), tenant, name)
	}
	if errors.Is(err, store.ErrNotFound) {
		return d, errorf(http.StatusNotFound, "deployment_not_found", "no deployment %s: 'broker deployment list' shows them", ref)
	}
	if err != nil {
		return d, fmt.Errorf("get deployment %s: %w", ref, err)
	}
	return d, nil
}

func (b *Broker) handleGetDeployment(w http.ResponseWriter, r *http.Request) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b.view(d))
	return nil
}

func (b *Broker) handleNewPairingToken(w http.ResponseWriter, r *http.Request) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	tok, err := b.issuePairingToken(r, d)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, tok)
	return nil
}

// issuePairingToken adds a pairing token to d, audited; the API and the
// web console both call it.
func (b *Broker) issuePairingToken(r *http.Request, d store.DeploymentStatus) (brokerapi.PairingToken, error) {
	token, tok := b.newPairingToken(d.ID, b.now())
	if err := b.store.AddPairingToken(r.Context(), tok); err != nil {
		return brokerapi.PairingToken{}, fmt.Errorf("add pairing token: %w", err)
	}
	if err := b.record(r.Context(), audit.Event{
		Type: audit.PairingTokenIssued, Actor: actorOf(r), Deployment: d.ID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success,
	}); err != nil {
		return brokerapi.PairingToken{}, err
	}
	return brokerapi.PairingToken{DeploymentID: d.ID, Token: token, ExpiresAt: tok.ExpiresAt.UTC()}, nil
}

func (b *Broker) handlePing(w http.ResponseWriter, r *http.Request) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	count := 1
	if s := r.URL.Query().Get("count"); s != "" {
		if count, err = strconv.Atoi(s); err != nil || count < 1 || count > 100 {
			return errorf(http.StatusBadRequest, "invalid_count", "count %q: want a whole number from 1 to 100", s)
		}
	}
	if d.Agent == nil {
		return errorf(http.StatusConflict, "agent_unpaired", "deployment %s/%s has no paired agent", d.Tenant, d.Name)
	}
	out := brokerapi.PingResponse{AgentID: d.Agent.ID}
	for range count {
		start := time.Now()
		pr, err := b.pingAgent(r.Context(), *d.Agent)
		if err != nil {
			return errorf(http.StatusBadGateway, "agent_unreachable", "agent of %s/%s did not answer: %v", d.Tenant, d.Name, err)
		}
		out.Version = pr.Version
		out.RTTs = append(out.RTTs, time.Since(start).String())
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// view turns a stored deployment into its API form, deciding whether the
// agent is online: offline after three missed heartbeats.
func (b *Broker) view(d store.DeploymentStatus) brokerapi.Deployment {
	v := brokerapi.Deployment{
		ID: d.ID, Tenant: d.Tenant, Name: d.Name, Region: d.Region,
		CreatedAt: d.CreatedAt.UTC(), AgentStatus: brokerapi.StatusUnpaired,
		Settings: settingsView(d.Settings),
	}
	a := d.Agent
	if a == nil {
		return v
	}
	v.AgentStatus = brokerapi.StatusOffline
	v.Agent = &brokerapi.Agent{ID: a.ID, Node: a.NodeName, NodeID: a.NodeID, PairedAt: a.PairedAt.UTC()}
	if !a.Last.At.IsZero() {
		at := a.Last.At.UTC()
		v.Agent.LastSeen = &at
		v.Agent.Version = a.Last.Version
		v.Agent.Uptime = a.Last.Uptime.Round(time.Second).String()
		v.Agent.TailnetIP = a.Last.TailnetIP
		v.Agent.Upstreams = a.Last.Upstreams
		v.Agent.WitnessRefusal = a.Last.WitnessRefusal
		v.Agent.Approval = approvalView(a.Last.Approval)
		v.Agent.CustomerApproval = brokerapi.DescribeApproval(v.Agent.Approval)
		v.Agent.Clock = clockView(a.Last.Clock)
		if b.now().Sub(a.Last.At) < 3*b.cfg.HeartbeatInterval {
			v.AgentStatus = brokerapi.StatusOnline
		}
	}
	return v
}

// approvalView is an agent's approval authority in its API form; nil
// when the agent enforces none and serves break-glass grants.
func approvalView(a *store.AgentApproval) *brokerapi.AgentApproval {
	if a == nil {
		return nil
	}
	bg := "deny"
	if a.BreakGlassAllowed {
		bg = "allow"
	}
	return &brokerapi.AgentApproval{Enforced: a.Enforced(), Issuer: a.Issuer, Audience: a.Audience, Group: a.Group,
		Required: a.Required, BreakGlass: bg}
}

// witnessRefuses records that an agent, the customer's witness, found the
// broker's audit log rewritten and refuses every data-plane call: the
// first heartbeat saying so is logged as an error and audited.
func (b *Broker) witnessRefuses(ctx context.Context, a store.Agent, reason string) {
	b.log.Error("an agent refuses every data-plane call: as the customer's witness it found the audit log smaller than, or forking from, the one it cosigned; restore the store from a backup and compare it with an export",
		"agent_id", a.ID, "deployment", a.DeploymentID, "reason", reason)
	b.record(ctx, audit.Event{
		Type: audit.VerifyFailed, Outcome: audit.Failure,
		Actor:      audit.Actor{Subject: "agent:" + a.ID, Role: "agent"},
		Deployment: a.DeploymentID, AgentID: a.ID,
		Reason:  "witness refuses: " + reason,
		Details: map[string]any{"found_by": "witness"},
	})
}
