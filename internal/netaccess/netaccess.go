// Package netaccess is the network side of Tether's access domain as
// plain Go: which AWS accounts each tenant lets Tether touch (the
// registrations, their confirmation and the sealed external IDs of their
// roles), what a network change request may name, the plan its approvers
// see and the checks an apply must pass (the approved digest, freezes,
// maintenance windows) before netmgr changes anything.
//
// The rules are pure functions (validate.go, rules.go): [ParseNetworkConfig],
// [ParsePeering], [ParseRegistration], [InWindow], [FreezeSinceApproval],
// [ApprovedIntent], [CheckOp], [CheckApply]. A [Service] applies them over
// a [Store], records every change's audit event through a [Recorder] before
// anyone is answered, and drives a [Manager] (netmgr) with both sides of a
// change, checked against the tenant's registrations. It knows nothing of
// HTTP: refusals are [Error] values with a stable code and a [Kind] the
// broker maps to an HTTP status.
package netaccess

import (
	"context"
	"crypto/cipher"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/netmgr"
	"github.com/tetherhq/tether/internal/store"
)

// Kind is the class of a refusal, for the caller to choose its answer
// (an HTTP status at the broker's edge).
type Kind int

// The kinds of [Error].
const (
	Invalid       Kind = iota // what was asked for is malformed
	Forbidden                 // not registered, not the approver, a public CIDR
	NotFound                  // no such tenant, registration or AWS resource
	Conflict                  // the state does not allow it now
	Internal                  // a stored plan or seal that does not open
	NotConfigured             // the broker manages no networks
	Upstream                  // AWS failed
)

// Error is a refusal by the network domain. Code is stable (the broker's
// API answers it); Message says what to do about it.
type Error struct {
	Kind    Kind
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func refuse(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Store is what the network domain reads and writes; [store.Store] is one.
type Store interface {
	GetNetworkRegistration(ctx context.Context, id string) (store.NetworkRegistration, error)
	GetNetworkRegistrationByAccount(ctx context.Context, account string) (store.NetworkRegistration, error)
	ListNetworkRegistrations(ctx context.Context, tenant string) ([]store.NetworkRegistration, error)
	CreateNetworkRegistration(ctx context.Context, reg store.NetworkRegistration) error
	// UpdateNetworkRegistration stores reg if the stored version is
	// reg.Version, else fails with an error wrapping [store.ErrConflict].
	UpdateNetworkRegistration(ctx context.Context, reg store.NetworkRegistration) error
	DeleteNetworkRegistration(ctx context.Context, id string) error
	GetDeployment(ctx context.Context, id string) (store.DeploymentStatus, error)
	ListRequests(ctx context.Context, f store.RequestFilter) ([]store.AccessRequest, error)
}

// Recorder writes an audit event durably; an error stops the action the
// event records and is returned to the caller as it is.
type Recorder interface {
	Record(ctx context.Context, e audit.Event) error
}

// Manager makes network changes in AWS; [netmgr.Manager] is one.
type Manager interface {
	PlanPeering(ctx context.Context, t netmgr.Target, p netmgr.Peer, tags netmgr.Tags) (netmgr.Plan, error)
	ApplyApprovedPeering(ctx context.Context, t netmgr.Target, p netmgr.Peer, tags netmgr.Tags, approved netmgr.Intent) (netmgr.Plan, error)
	PeeringStatus(ctx context.Context, t netmgr.Target, p netmgr.Peer) (netmgr.Status, error)
	TeardownPeering(ctx context.Context, t netmgr.Target, p netmgr.Peer, tags netmgr.Tags) (netmgr.Plan, error)
	PlanIngress(ctx context.Context, t netmgr.Target, p netmgr.Peer, tags netmgr.Tags) (netmgr.Plan, error)
	EnableApprovedIngress(ctx context.Context, t netmgr.Target, p netmgr.Peer, tags netmgr.Tags, approved netmgr.Intent) (netmgr.Plan, error)
	IngressStatus(ctx context.Context, t netmgr.Target, p netmgr.Peer) (netmgr.Status, error)
	DisableIngress(ctx context.Context, t netmgr.Target, p netmgr.Peer, tags netmgr.Tags) (netmgr.Plan, error)
}

var _ Manager = (*netmgr.Manager)(nil)

// Config configures a [Service].
type Config struct {
	Store Store
	Audit Recorder
	// CallAudit records the aws.call event of each AWS call that changed
	// something ([Service.RecordAWSCall]); nil means Audit.
	CallAudit Recorder
	// Manager makes the changes; nil means the broker manages no
	// networks (every change is refused with network_not_configured).
	Manager Manager
	// Seal seals registered roles' external IDs ([LoadSealKey]); nil
	// refuses registrations and changes alike.
	Seal cipher.AEAD
	// KnownTenant reports whether the broker trusts an identity provider
	// of tenant, whose approvers could confirm and use a registration.
	KnownTenant func(tenant string) bool
	// UpdateRequest applies change to a stored access request, retrying
	// on conflicts; an error from change is returned as it is.
	UpdateRequest func(ctx context.Context, id string, change func(*store.AccessRequest) error) (store.AccessRequest, error)
	// Changed follows a change once it is audited (long polls wake); may
	// be nil.
	Changed func()
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives what no caller is told; nil discards.
	Logger *slog.Logger
}

// Service runs network registrations and changes over a store.
type Service struct {
	cfg Config
	log *slog.Logger
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CallAudit == nil {
		cfg.CallAudit = cfg.Audit
	}
	if cfg.KnownTenant == nil {
		cfg.KnownTenant = func(string) bool { return false }
	}
	return &Service{cfg: cfg, log: cfg.Logger.With("component", "netaccess")}
}

// Caller is who acts, as the store keeps them and as the audit log names
// them for this call.
type Caller struct {
	Person store.Person
	Actor  audit.Actor
	Source audit.Source
}

// broker is the actor of what the broker does by itself.
var broker = audit.Actor{Subject: "broker", Role: "broker"}

func (s *Service) now() time.Time { return s.cfg.Now() }

func (s *Service) changed() {
	if s.cfg.Changed != nil {
		s.cfg.Changed()
	}
}

// Configured reports, as a refusal, that the service has no network
// manager: the broker manages no networks.
func (s *Service) Configured() error {
	_, err := s.manager()
	return err
}

// Sealing reports, as a refusal, that the service has no key to seal
// external IDs with.
func (s *Service) Sealing() error {
	_, err := s.sealer()
	return err
}

// manager returns the network manager, or a refusal when there is none.
func (s *Service) manager() (Manager, error) {
	if s.cfg.Manager == nil {
		return nil, refuse(NotConfigured, "network_not_configured", "this broker manages no networks: it needs AWS credentials in its environment (and aws_endpoint_url for a test endpoint)")
	}
	return s.cfg.Manager, nil
}

// sealer returns the AEAD sealing external IDs, or a refusal when there
// is none.
func (s *Service) sealer() (cipher.AEAD, error) {
	if s.cfg.Seal == nil {
		return nil, refuse(NotConfigured, "network_not_configured", "this broker has no key to seal external IDs with, so it manages no networks")
	}
	return s.cfg.Seal, nil
}

// truncate cuts s to at most n bytes, at a character boundary, marking
// the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
