package netaccess

// Network registrations: the AWS accounts each tenant lets Tether touch.
//
// An account belongs to one tenant. A tenant's customer approver registers
// it (account, the role Tether assumes there, the VPCs and optionally the
// route tables and peer CIDRs it may touch) and the registration is
// active at once; a vendor admin may register it on the tenant's behalf,
// but that registration stays pending, usable by nothing, until an
// approver of the tenant confirms it. Either way the service then makes
// the role's external ID — 24 random bytes — returns it once, to the
// approver whose registration or confirmation made it active, for the
// role's CloudFormation stack, and keeps it sealed (AES-256-GCM, bound to
// the registration) under a key only the broker holds. Network changes
// may name only what is registered to their deployment's tenant, and the
// external ID is opened only when the role is assumed.

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/netmgr"
	"github.com/tetherhq/tether/internal/store"
)

// SealKeyFile is the file in the data dir holding the key that seals
// external IDs, when no key reference is configured.
const SealKeyFile = "network-seal.key"

const (
	externalIDBytes     = 24 // 192 bits
	externalIDPrefix    = "tether-"
	sealVersion         = 1
	sealAADPrefix       = "tether network external ID v1\n"
	registrationWaitMsg = "waits for an approver of tenant %s to confirm it ('broker network confirm %s')"
)

// LoadSealKey returns the AEAD that seals external IDs: the key ref names
// (a file: or env: reference to 32 bytes, hex or base64, the same on every
// broker sharing a database), or dataDir/SealKeyFile, created (mode 0600)
// on first start.
func LoadSealKey(ref, dataDir string) (cipher.AEAD, error) {
	var key []byte
	if ref != "" {
		if !strings.HasPrefix(ref, "file:") && !strings.HasPrefix(ref, "env:") {
			return nil, errors.New("network seal key: want a file:PATH or env:NAME reference, never the key itself in the config")
		}
		v, err := config.Secret(ref)
		if err != nil {
			return nil, fmt.Errorf("network seal key: %w", err)
		}
		if key = decodeSealKey(v); key == nil {
			return nil, fmt.Errorf("network seal key %s: want 32 random bytes, hex or base64 encoded (openssl rand -hex 32)", ref)
		}
	} else {
		path := filepath.Join(dataDir, SealKeyFile)
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			key = make([]byte, 32)
			rand.Read(key)
			if err := config.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("network seal key: %w", err)
			}
		case err != nil:
			return nil, fmt.Errorf("network seal key: %w", err)
		default:
			if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
				return nil, fmt.Errorf("network seal key %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
			}
			if key = decodeSealKey(string(b)); key == nil {
				return nil, fmt.Errorf("network seal key %s is corrupt: want 32 hex-encoded bytes; restore it from backup (a new key makes every registered role's external ID unreadable: each account is then registered again)", path)
			}
		}
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("network seal key: %w", err)
	}
	return cipher.NewGCM(block)
}

func decodeSealKey(s string) []byte {
	s = strings.TrimSpace(s)
	for _, dec := range []func(string) ([]byte, error){hex.DecodeString, base64.StdEncoding.DecodeString, base64.RawURLEncoding.DecodeString, base64.URLEncoding.DecodeString} {
		if k, err := dec(s); err == nil && len(k) == 32 {
			return k
		}
	}
	return nil
}

// newExternalID returns a new random external ID: the prefix and 24
// random bytes, base64url (AWS accepts those characters).
func newExternalID() string {
	b := make([]byte, externalIDBytes)
	rand.Read(b)
	return externalIDPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// sealAAD binds a sealed external ID to its registration: moved to
// another row, it does not open.
func sealAAD(reg store.NetworkRegistration) []byte {
	return []byte(sealAADPrefix + reg.ID + "\n" + reg.Tenant + "\n" + reg.AccountID + "\n" + reg.RoleARN)
}

// sealExternalID seals id for reg with aead: a version byte, the nonce,
// the ciphertext.
func sealExternalID(aead cipher.AEAD, reg store.NetworkRegistration, id string) []byte {
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out := append([]byte{sealVersion}, nonce...)
	return aead.Seal(out, nonce, []byte(id), sealAAD(reg))
}

// openExternalID returns reg's external ID, sealed with aead.
func openExternalID(aead cipher.AEAD, reg store.NetworkRegistration) (string, error) {
	n := aead.NonceSize()
	s := reg.SealedExternalID
	if len(s) < 1+n || s[0] != sealVersion {
		return "", fmt.Errorf("registration %s of account %s holds no external ID", reg.ID, reg.AccountID)
	}
	id, err := aead.Open(nil, s[1:1+n], s[1+n:], sealAAD(reg))
	if err != nil {
		// Never the sealed bytes, never a guess: the role is not assumed.
		return "", refuse(Internal, "external_id_unreadable", "the external ID of account %s's role (registration %s) does not open with this broker's seal key: brokers sharing a database need the same network_seal_key; a lost key means registering the account again", reg.AccountID, reg.ID)
	}
	return string(id), nil
}

// RegistrationDetails are what the audit log says of a registration:
// never the external ID.
func RegistrationDetails(reg store.NetworkRegistration) map[string]any {
	return map[string]any{
		"registration": reg.ID, "tenant": reg.Tenant, "account": reg.AccountID, "role_arn": reg.RoleARN,
		"vpcs": reg.VPCIDs, "route_tables": reg.RouteTableIDs, "peer_cidrs": reg.PeerCIDRs, "state": reg.State,
	}
}

// Register registers an AWS account to tenant: active at once for the
// tenant's approver (the external ID is returned, this once), pending for
// anyone else (a vendor admin) until an approver confirms it. An account
// belongs to one tenant: registering it again is refused, and audited.
func (s *Service) Register(ctx context.Context, c Caller, tenant string, in brokerapi.RegisterNetwork) (store.NetworkRegistration, string, error) {
	aead, err := s.sealer()
	if err != nil {
		return store.NetworkRegistration{}, "", err
	}
	reg, err := ParseRegistration(tenant, in)
	if err != nil {
		return reg, "", err
	}
	if !s.cfg.KnownTenant(tenant) {
		return reg, "", refuse(NotFound, "unknown_tenant", "tenant %s has no identity provider on this broker, so none of its approvers could confirm or use a registration: add its issuer to the broker's identity config first", tenant)
	}
	now := s.now()
	reg.ID, reg.RegisteredBy, reg.CreatedAt, reg.Version = uuid.NewString(), c.Person, now, 1
	reg.State = store.RegistrationPending
	var externalID string
	if IsTenantApprover(c.Person, tenant) {
		confirmer := c.Person
		externalID = newExternalID()
		reg.State, reg.ConfirmedBy, reg.ConfirmedAt = store.RegistrationActive, &confirmer, now
		reg.SealedExternalID = sealExternalID(aead, reg, externalID)
	}
	ev := audit.Event{Type: audit.NetworkRegistered, Actor: c.Actor, Source: c.Source, Outcome: audit.Success, Details: RegistrationDetails(reg)}
	if existing, err := s.cfg.Store.GetNetworkRegistrationByAccount(ctx, reg.AccountID); err == nil {
		return reg, "", s.refuseRegistration(ctx, ev, c.Person, existing)
	} else if !errors.Is(err, store.ErrNotFound) {
		return reg, "", fmt.Errorf("look up account %s: %w", reg.AccountID, err)
	}
	// The event first: a registration that cannot be audited is not made.
	if err := s.cfg.Audit.Record(ctx, ev); err != nil {
		return reg, "", err
	}
	if err := s.cfg.Store.CreateNetworkRegistration(ctx, reg); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Another registration of the account came in between.
			if existing, gerr := s.cfg.Store.GetNetworkRegistrationByAccount(ctx, reg.AccountID); gerr == nil {
				return reg, "", s.refuseRegistration(ctx, ev, c.Person, existing)
			}
		}
		return reg, "", fmt.Errorf("register account %s: %w", reg.AccountID, err)
	}
	return reg, externalID, nil
}

// RefuseRegistration is the refusal of a registration by p of an account
// existing holds already, for tenant: it says what to do, and another
// tenant's approver is not told which tenant holds the account.
func RefuseRegistration(p store.Person, tenant, account string, existing store.NetworkRegistration) *Error {
	switch {
	case existing.Tenant == tenant:
		return refuse(Conflict, "account_registered", "account %s is registered to tenant %s already (registration %s, %s): to change its role or VPCs, unregister it ('broker network unregister %s') and register it again", account, existing.Tenant, existing.ID, existing.State, existing.ID)
	case p.Tenant == "":
		return refuse(Conflict, "account_registered", "account %s is registered to tenant %s (registration %s): an account belongs to one tenant only; to move it, that registration is removed first ('broker network unregister %s')", account, existing.Tenant, existing.ID, existing.ID)
	default:
		return refuse(Conflict, "account_registered", "account %s is registered to another tenant: an account belongs to one tenant only; if it is yours, ask the vendor's admin to look into it", account)
	}
}

// refuseRegistration records the refusal of ev's registration and
// returns it.
func (s *Service) refuseRegistration(ctx context.Context, ev audit.Event, p store.Person, existing store.NetworkRegistration) error {
	tenant, _ := ev.Details["tenant"].(string)
	account, _ := ev.Details["account"].(string)
	e := RefuseRegistration(p, tenant, account, existing)
	ev.Outcome, ev.Reason = audit.Failure, "account registered to tenant "+existing.Tenant+" (registration "+existing.ID+")"
	if err := s.cfg.Audit.Record(ctx, ev); err != nil {
		return err
	}
	return e
}

// List returns the registrations of tenant ("" for all).
func (s *Service) List(ctx context.Context, tenant string) ([]store.NetworkRegistration, error) {
	regs, err := s.cfg.Store.ListNetworkRegistrations(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("list registrations: %w", err)
	}
	return regs, nil
}

// Get returns tenant's registration id; another tenant's is not found.
func (s *Service) Get(ctx context.Context, tenant, id string) (store.NetworkRegistration, error) {
	reg, err := s.cfg.Store.GetNetworkRegistration(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && reg.Tenant != tenant) {
		return reg, refuse(NotFound, "registration_not_found", "tenant %s has no network registration %s: 'broker network registrations' lists them", tenant, truncate(id, 64))
	}
	if err != nil {
		return reg, fmt.Errorf("get registration: %w", err)
	}
	return reg, nil
}

// Confirm confirms a pending registration of tenant, by an approver of
// that tenant; it returns the registration, now active, and its new
// external ID, this once.
func (s *Service) Confirm(ctx context.Context, c Caller, tenant, id string) (store.NetworkRegistration, string, error) {
	aead, err := s.sealer()
	if err != nil {
		return store.NetworkRegistration{}, "", err
	}
	reg, err := s.Get(ctx, tenant, id)
	if err != nil {
		return reg, "", err
	}
	if !IsTenantApprover(c.Person, reg.Tenant) {
		return reg, "", refuse(Forbidden, "not_tenant_approver", "only an approver of tenant %s, signed in through its identity provider, confirms its registrations", reg.Tenant)
	}
	if reg.State != store.RegistrationPending {
		return reg, "", refuse(Conflict, "already_confirmed", "registration %s of account %s is %s already: its external ID was shown when it became active; to get a new one, unregister it and register it again", reg.ID, reg.AccountID, reg.State)
	}
	now := s.now()
	confirmed := reg
	confirmer := c.Person
	externalID := newExternalID()
	confirmed.State, confirmed.ConfirmedBy, confirmed.ConfirmedAt = store.RegistrationActive, &confirmer, now
	confirmed.SealedExternalID = sealExternalID(aead, confirmed, externalID)
	if err := s.cfg.Audit.Record(ctx, audit.Event{Type: audit.NetworkRegistrationConfirmed, Actor: c.Actor, Source: c.Source,
		Outcome: audit.Success, Details: RegistrationDetails(confirmed)}); err != nil {
		return reg, "", err
	}
	if err := s.cfg.Store.UpdateNetworkRegistration(ctx, confirmed); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return reg, "", refuse(Conflict, "registration_changed", "registration %s changed while you confirmed it: 'broker network registrations' shows it now", reg.ID)
		}
		return reg, "", fmt.Errorf("confirm registration: %w", err)
	}
	confirmed.Version++
	return confirmed, externalID, nil
}

// Unregister removes tenant's registration id: network changes may no
// longer name the account, and the external ID is forgotten.
func (s *Service) Unregister(ctx context.Context, c Caller, tenant, id string) (store.NetworkRegistration, error) {
	reg, err := s.Get(ctx, tenant, id)
	if err != nil {
		return reg, err
	}
	if err := s.cfg.Audit.Record(ctx, audit.Event{Type: audit.NetworkUnregistered, Actor: c.Actor, Source: c.Source,
		Outcome: audit.Success, Details: RegistrationDetails(reg)}); err != nil {
		return reg, err
	}
	if err := s.cfg.Store.DeleteNetworkRegistration(ctx, reg.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return reg, refuse(NotFound, "registration_not_found", "registration %s was removed meanwhile", reg.ID)
		}
		return reg, fmt.Errorf("unregister: %w", err)
	}
	return reg, nil
}

// CheckRegistered checks reg, the registration of account (if any), for
// one side of a change of tenant: active, and registering role, vpc and
// the route tables. side names the side in messages ("BYOC" or "peer").
// Whatever is not registered to tenant is refused alike, never saying
// whose it is.
func CheckRegistered(reg store.NetworkRegistration, found bool, tenant, side, account, role, vpc string, rtbs []string) error {
	if !found || reg.Tenant != tenant {
		return refuse(Forbidden, "not_registered", "%s account %s is not registered to tenant %s: its approvers register it with 'broker network register --tenant %s --account %s --role-arn ARN --vpc VPC'", side, account, tenant, tenant, account)
	}
	if reg.State != store.RegistrationActive {
		return refuse(Forbidden, "registration_pending", "%s account %s's registration (%s) "+registrationWaitMsg, side, account, reg.ID, tenant, reg.ID)
	}
	if role != reg.RoleARN {
		return refuse(Forbidden, "not_registered", "%s role %s is not the role registered for account %s (%s): name that role, or register the account again with this one", side, role, account, reg.RoleARN)
	}
	if !slices.Contains(reg.VPCIDs, vpc) {
		return refuse(Forbidden, "not_registered", "%s VPC %s is not registered to tenant %s in account %s (registered: %s): its approvers register it ('broker network unregister %s', then register the account with every VPC)", side, vpc, tenant, account, strings.Join(reg.VPCIDs, ", "), reg.ID)
	}
	if len(reg.RouteTableIDs) > 0 {
		if len(rtbs) == 0 {
			return refuse(Forbidden, "not_registered", "%s account %s registers only the route tables %s: name those the change needs rather than all of the VPC's", side, account, strings.Join(reg.RouteTableIDs, ", "))
		}
		for _, rt := range rtbs {
			if !slices.Contains(reg.RouteTableIDs, rt) {
				return refuse(Forbidden, "not_registered", "%s route table %s is not registered to tenant %s in account %s (registered: %s)", side, rt, tenant, account, strings.Join(reg.RouteTableIDs, ", "))
			}
		}
	}
	return nil
}

// registered returns the active registration of account to tenant, after
// checking it with [CheckRegistered].
func (s *Service) registered(ctx context.Context, tenant, side, account, role, vpc string, rtbs []string) (store.NetworkRegistration, error) {
	reg, err := s.cfg.Store.GetNetworkRegistrationByAccount(ctx, account)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return reg, fmt.Errorf("look up account %s: %w", account, err)
	}
	return reg, CheckRegistered(reg, err == nil, tenant, side, account, role, vpc, rtbs)
}

// CheckConfig checks that a deployment's BYOC side is registered to its
// tenant.
func (s *Service) CheckConfig(ctx context.Context, tenant string, n *store.NetworkConfig) error {
	_, err := s.registered(ctx, tenant, "BYOC", n.AccountID, n.RoleARN, n.VPCID, n.RouteTableIDs)
	return err
}

// CheckRequest checks that a network change names only what is
// registered to the deployment's tenant: its own BYOC side and the peer.
func (s *Service) CheckRequest(ctx context.Context, tenant string, n *store.NetworkConfig, spec *store.PeeringSpec) error {
	if err := s.CheckConfig(ctx, tenant, n); err != nil {
		return err
	}
	_, err := s.registered(ctx, tenant, "peer", spec.AccountID, spec.RoleARN, spec.VPCID, spec.RouteTableIDs)
	return err
}

// target is a deployment's BYOC side as netmgr sees it, once checked
// against the tenant's registrations, with the role's external ID.
func (s *Service) target(ctx context.Context, tenant string, n *store.NetworkConfig) (netmgr.Target, error) {
	aead, err := s.sealer()
	if err != nil {
		return netmgr.Target{}, err
	}
	reg, err := s.registered(ctx, tenant, "BYOC", n.AccountID, n.RoleARN, n.VPCID, n.RouteTableIDs)
	if err != nil {
		return netmgr.Target{}, err
	}
	ext, err := openExternalID(aead, reg)
	if err != nil {
		return netmgr.Target{}, err
	}
	return netmgr.Target{
		AccountID: n.AccountID, Region: n.Region, VPCID: n.VPCID, RoleARN: n.RoleARN, ExternalID: ext,
		RouteTableIDs: n.RouteTableIDs, LBTags: n.LBTags, PrivateHostname: n.PrivateHostname,
	}, nil
}

// peer is the peer side of a network change as netmgr sees it, once
// checked against the tenant's registrations, with the role's external ID.
func (s *Service) peer(ctx context.Context, tenant string, spec *store.PeeringSpec) (netmgr.Peer, error) {
	aead, err := s.sealer()
	if err != nil {
		return netmgr.Peer{}, err
	}
	reg, err := s.registered(ctx, tenant, "peer", spec.AccountID, spec.RoleARN, spec.VPCID, spec.RouteTableIDs)
	if err != nil {
		return netmgr.Peer{}, err
	}
	ext, err := openExternalID(aead, reg)
	if err != nil {
		return netmgr.Peer{}, err
	}
	return netmgr.Peer{AccountID: spec.AccountID, Region: spec.Region, VPCID: spec.VPCID, RoleARN: spec.RoleARN, ExternalID: ext, RouteTableIDs: spec.RouteTableIDs}, nil
}

// Sides returns both sides of a network change of tenant, each checked
// against the tenant's registrations and carrying its role's external
// ID, which the service opens only here, for netmgr to assume the role.
func (s *Service) Sides(ctx context.Context, tenant string, n *store.NetworkConfig, spec *store.PeeringSpec) (netmgr.Target, netmgr.Peer, error) {
	t, err := s.target(ctx, tenant, n)
	if err != nil {
		return t, netmgr.Peer{}, err
	}
	p, err := s.peer(ctx, tenant, spec)
	return t, p, err
}

// peerFor is p with the public CIDRs its account's registration lists
// allowed: a peer VPC range outside private address space is accepted
// only when the tenant registered it as its own (broker network register
// --peer-cidr), inside an active registration of that account to that
// tenant. Anything it cannot read allows nothing.
func (s *Service) peerFor(ctx context.Context, tenant string, p netmgr.Peer) netmgr.Peer {
	var own []netip.Prefix
	if reg, err := s.cfg.Store.GetNetworkRegistrationByAccount(ctx, p.AccountID); err == nil && reg.Tenant == tenant && reg.State == store.RegistrationActive {
		for _, c := range reg.PeerCIDRs {
			if pfx, err := netip.ParsePrefix(c); err == nil {
				own = append(own, pfx.Masked())
			}
		}
	}
	p.PublicCIDROK = func(c netip.Prefix) bool { return RegisteredCIDR(own, c) }
	return p
}
