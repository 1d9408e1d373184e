package broker

// Network registrations: the AWS accounts each tenant lets Tether touch.
//
// An account belongs to one tenant. A tenant's customer approver registers
// it (account, the role Tether assumes there, the VPCs and optionally the
// route tables and peer CIDRs it may touch) and the registration is
// active at once; a vendor admin may register it on the tenant's behalf,
// but that registration stays pending, usable by nothing, until an
// approver of the tenant confirms it. Either way the broker then makes
// the role's external ID — 24 random bytes — shows it once, in the answer
// to the approver whose registration or confirmation made it active, for
// the role's CloudFormation stack, and keeps it sealed (AES-256-GCM, bound
// to the registration) under a key only the broker holds. Network changes
// may name only what is registered to their deployment's tenant, and the
// broker opens the external ID only when it assumes the role.

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tetherhq/tether/internal/names"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/netmgr"
	"github.com/tetherhq/tether/internal/store"
)

// SealKeyFile is the file in the data dir holding the key that seals
// external IDs, when [Config.NetworkSealKey] is not set.
const SealKeyFile = "network-seal.key"

// Bounds of a registration.
const (
	maxRegisteredVPCs   = 50
	maxRegisteredRTBs   = 200
	maxRegisteredCIDRs  = 50
	externalIDBytes     = 24 // 192 bits
	externalIDPrefix    = "tether-"
	sealVersion         = 1
	sealAADPrefix       = "tether network external ID v1\n"
	registrationWaitMsg = "waits for an approver of tenant %s to confirm it ('broker network confirm %s')"
)

// loadSealKey returns the AEAD that seals external IDs: the key the
// config names (a file: or env: reference to 32 bytes, hex or base64,
// the same on every broker sharing a database), or DataDir/SealKeyFile,
// created (mode 0600) on first start.
func loadSealKey(cfg Config) (cipher.AEAD, error) {
	var key []byte
	if cfg.NetworkSealKey != "" {
		if !strings.HasPrefix(cfg.NetworkSealKey, "file:") && !strings.HasPrefix(cfg.NetworkSealKey, "env:") {
			return nil, errors.New("network seal key: want a file:PATH or env:NAME reference, never the key itself in the config")
		}
		v, err := config.Secret(cfg.NetworkSealKey)
		if err != nil {
			return nil, fmt.Errorf("network seal key: %w", err)
		}
		if key = decodeSealKey(v); key == nil {
			return nil, fmt.Errorf("network seal key %s: want 32 random bytes, hex or base64 encoded (openssl rand -hex 32)", cfg.NetworkSealKey)
		}
	} else {
		path := filepath.Join(cfg.DataDir, SealKeyFile)
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

// sealExternalID seals id for reg: a version byte, the nonce, the
// ciphertext.
func (b *Broker) sealExternalID(reg store.NetworkRegistration, id string) []byte {
	nonce := make([]byte, b.netSeal.NonceSize())
	rand.Read(nonce)
	out := append([]byte{sealVersion}, nonce...)
	return b.netSeal.Seal(out, nonce, []byte(id), sealAAD(reg))
}

// openExternalID returns reg's external ID.
func (b *Broker) openExternalID(reg store.NetworkRegistration) (string, error) {
	n := b.netSeal.NonceSize()
	s := reg.SealedExternalID
	if len(s) < 1+n || s[0] != sealVersion {
		return "", fmt.Errorf("registration %s of account %s holds no external ID", reg.ID, reg.AccountID)
	}
	id, err := b.netSeal.Open(nil, s[1:1+n], s[1+n:], sealAAD(reg))
	if err != nil {
		// Never the sealed bytes, never a guess: the role is not assumed.
		return "", errorf(http.StatusInternalServerError, "external_id_unreadable", "the external ID of account %s's role (registration %s) does not open with this broker's seal key: brokers sharing a database need the same network_seal_key; a lost key means registering the account again", reg.AccountID, reg.ID)
	}
	return string(id), nil
}

// registrationView is the API form of a registration: never the external
// ID, sealed or not.
func registrationView(reg store.NetworkRegistration) brokerapi.NetworkRegistration {
	v := brokerapi.NetworkRegistration{
		ID: reg.ID, Tenant: reg.Tenant, AccountID: reg.AccountID, RoleARN: reg.RoleARN,
		VPCIDs: reg.VPCIDs, RouteTableIDs: reg.RouteTableIDs, PeerCIDRs: reg.PeerCIDRs,
		State: reg.State, RegisteredBy: displayName(reg.RegisteredBy), CreatedAt: reg.CreatedAt, ConfirmedAt: reg.ConfirmedAt,
	}
	if reg.ConfirmedBy != nil {
		v.ConfirmedBy = displayName(*reg.ConfirmedBy)
	}
	return v
}

// registrationDetails are what the audit log says of a registration:
// never the external ID.
func registrationDetails(reg store.NetworkRegistration) map[string]any {
	return map[string]any{
		"registration": reg.ID, "tenant": reg.Tenant, "account": reg.AccountID, "role_arn": reg.RoleARN,
		"vpcs": reg.VPCIDs, "route_tables": reg.RouteTableIDs, "peer_cidrs": reg.PeerCIDRs, "state": reg.State,
	}
}

// registrationFromAPI validates what a registration names.
func registrationFromAPI(tenant string, in brokerapi.RegisterNetwork) (store.NetworkRegistration, error) {
	reg := store.NetworkRegistration{Tenant: tenant, AccountID: in.AccountID, RoleARN: in.RoleARN}
	if err := checkAWS("account_id", in.AccountID, accountRE, "a 12-digit AWS account ID"); err != nil {
		return reg, err
	}
	if err := checkAWS("role_arn", in.RoleARN, roleARNRE, "an IAM role ARN such as arn:aws:iam::111111111111:role/TetherNetwork (deploy/aws/tether-network-role.yaml creates it)"); err != nil {
		return reg, err
	}
	if acct := strings.SplitN(in.RoleARN, ":", 6)[4]; acct != in.AccountID {
		return reg, errorf(http.StatusBadRequest, "invalid_role_arn", "role_arn %s is a role of account %s, not of account %s: register each account with a role of its own", in.RoleARN, acct, in.AccountID)
	}
	if len(in.VPCIDs) == 0 || len(in.VPCIDs) > maxRegisteredVPCs {
		return reg, errorf(http.StatusBadRequest, "invalid_vpc_ids", "vpc_ids: want 1 to %d VPCs of account %s that Tether may peer or reach (--vpc vpc-…)", maxRegisteredVPCs, in.AccountID)
	}
	for _, v := range in.VPCIDs {
		if err := checkAWS("vpc_ids", v, vpcRE, "VPC IDs such as vpc-0a1b2c3d4e5f67890"); err != nil {
			return reg, err
		}
	}
	if len(in.RouteTableIDs) > maxRegisteredRTBs {
		return reg, errorf(http.StatusBadRequest, "invalid_route_table_ids", "route_table_ids: at most %d", maxRegisteredRTBs)
	}
	for _, rt := range in.RouteTableIDs {
		if err := checkAWS("route_table_ids", rt, rtbRE, "route table IDs such as rtb-0a1b2c3d4e5f67890"); err != nil {
			return reg, err
		}
	}
	if len(in.PeerCIDRs) > maxRegisteredCIDRs {
		return reg, errorf(http.StatusBadRequest, "invalid_peer_cidrs", "peer_cidrs: at most %d", maxRegisteredCIDRs)
	}
	for _, c := range in.PeerCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil || !p.Addr().Is4() || p != p.Masked() {
			return reg, errorf(http.StatusBadRequest, "invalid_peer_cidrs", "peer_cidrs %q: want IPv4 CIDR blocks such as 10.1.0.0/16, with no host bits set", truncate(c, 64))
		}
	}
	reg.VPCIDs = uniq(in.VPCIDs)
	reg.RouteTableIDs = uniq(in.RouteTableIDs)
	reg.PeerCIDRs = uniq(in.PeerCIDRs)
	return reg, nil
}

func uniq(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// knownTenant reports whether the broker trusts an identity provider of
// tenant, whose approvers could confirm and use a registration.
func (b *Broker) knownTenant(tenant string) bool {
	return slices.ContainsFunc(b.identity.Issuers, func(ic identity.IssuerConfig) bool { return ic.Tenant == tenant })
}

// isTenantApprover reports whether p is a customer approver of tenant
// (not vendor staff holding the role name).
func isTenantApprover(p identity.Principal, tenant string) bool {
	return p.Tenant != "" && p.Tenant == tenant && p.HasRole(names.RoleApprover)
}

// handleRegisterNetwork registers an AWS account to the tenant: active at
// once for the tenant's approver (the answer carries the external ID),
// pending for a vendor admin.
func (b *Broker) handleRegisterNetwork(w http.ResponseWriter, r *http.Request) error {
	ctx, p, tenant := r.Context(), principalFrom(r.Context()), r.PathValue("tenant")
	if !names.IsLabel(tenant) {
		return errorf(http.StatusBadRequest, "invalid_tenant", "tenant %q is not a DNS label", truncate(tenant, 64))
	}
	if _, err := b.netSealer(); err != nil {
		return err
	}
	var in brokerapi.RegisterNetwork
	if err := decodeJSON(w, r, brokerapi.MaxBody, &in); err != nil {
		return err
	}
	reg, err := registrationFromAPI(tenant, in)
	if err != nil {
		return err
	}
	if !b.knownTenant(tenant) {
		return errorf(http.StatusNotFound, "unknown_tenant", "tenant %s has no identity provider on this broker, so none of its approvers could confirm or use a registration: add its issuer to the broker's identity config first", tenant)
	}
	now := b.now()
	reg.ID, reg.RegisteredBy, reg.CreatedAt, reg.Version = uuid.NewString(), person(p), now, 1
	reg.State = store.RegistrationPending
	var externalID string
	if isTenantApprover(p, tenant) {
		confirmer := person(p)
		externalID = newExternalID()
		reg.State, reg.ConfirmedBy, reg.ConfirmedAt = store.RegistrationActive, &confirmer, now
		reg.SealedExternalID = b.sealExternalID(reg, externalID)
	}
	ev := audit.Event{Type: audit.NetworkRegistered, Actor: actorOf(r), Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success, Details: registrationDetails(reg)}
	if existing, err := b.store.GetNetworkRegistrationByAccount(ctx, reg.AccountID); err == nil {
		return b.refuseRegistration(ctx, ev, p, existing)
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("look up account %s: %w", reg.AccountID, err)
	}
	// The event first: a registration that cannot be audited is not made.
	if err := b.record(ctx, ev); err != nil {
		return err
	}
	if err := b.store.CreateNetworkRegistration(ctx, reg); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Another registration of the account came in between.
			if existing, gerr := b.store.GetNetworkRegistrationByAccount(ctx, reg.AccountID); gerr == nil {
				return b.refuseRegistration(ctx, ev, p, existing)
			}
		}
		return fmt.Errorf("register account %s: %w", reg.AccountID, err)
	}
	writeJSON(w, http.StatusCreated, brokerapi.RegistrationResult{Registration: registrationView(reg), ExternalID: externalID})
	return nil
}

// refuseRegistration refuses to register an account that is registered
// already, records the refusal and says what to do. Another tenant's
// approver is not told which tenant holds the account.
func (b *Broker) refuseRegistration(ctx context.Context, ev audit.Event, p identity.Principal, existing store.NetworkRegistration) error {
	acct := ev.Details["account"]
	var ae *apiError
	switch {
	case existing.Tenant == ev.Details["tenant"]:
		ae = errorf(http.StatusConflict, "account_registered", "account %s is registered to tenant %s already (registration %s, %s): to change its role or VPCs, unregister it ('broker network unregister %s') and register it again", acct, existing.Tenant, existing.ID, existing.State, existing.ID)
	case p.Tenant == "":
		ae = errorf(http.StatusConflict, "account_registered", "account %s is registered to tenant %s (registration %s): an account belongs to one tenant only; to move it, that registration is removed first ('broker network unregister %s')", acct, existing.Tenant, existing.ID, existing.ID)
	default:
		ae = errorf(http.StatusConflict, "account_registered", "account %s is registered to another tenant: an account belongs to one tenant only; if it is yours, ask the vendor's admin to look into it", acct)
	}
	ev.Outcome, ev.Reason = audit.Failure, "account registered to tenant "+existing.Tenant+" (registration "+existing.ID+")"
	if err := b.record(ctx, ev); err != nil {
		return err
	}
	return ae
}

// handleListRegistrations lists the registrations of the tenants the
// caller may act on (?tenant= narrows it to one).
func (b *Broker) handleListRegistrations(w http.ResponseWriter, r *http.Request) error {
	p, tenant := principalFrom(r.Context()), r.URL.Query().Get("tenant")
	if tenant == "" {
		tenant = p.Tenant
	}
	if tenant != "" && !p.CanActOnTenant(tenant) {
		return errorf(http.StatusForbidden, "wrong_tenant", "you (%s, %s) may not act on tenant %s", p.Subject, scopeOf(p), truncate(tenant, 64))
	}
	regs, err := b.store.ListNetworkRegistrations(r.Context(), tenant)
	if err != nil {
		return fmt.Errorf("list registrations: %w", err)
	}
	out := brokerapi.ListNetworkRegistrationsResponse{Registrations: []brokerapi.NetworkRegistration{}}
	for _, reg := range regs {
		out.Registrations = append(out.Registrations, registrationView(reg))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// tenantRegistration loads the registration {id} of the path's tenant.
func (b *Broker) tenantRegistration(r *http.Request) (store.NetworkRegistration, error) {
	tenant, id := r.PathValue("tenant"), r.PathValue("id")
	reg, err := b.store.GetNetworkRegistration(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && reg.Tenant != tenant) {
		return reg, errorf(http.StatusNotFound, "registration_not_found", "tenant %s has no network registration %s: 'broker network registrations' lists them", tenant, truncate(id, 64))
	}
	if err != nil {
		return reg, fmt.Errorf("get registration: %w", err)
	}
	return reg, nil
}

// handleConfirmRegistration confirms a vendor admin's registration, as an
// approver of its tenant; the answer carries the new external ID, once.
func (b *Broker) handleConfirmRegistration(w http.ResponseWriter, r *http.Request) error {
	ctx, p := r.Context(), principalFrom(r.Context())
	if _, err := b.netSealer(); err != nil {
		return err
	}
	reg, err := b.tenantRegistration(r)
	if err != nil {
		return err
	}
	if !isTenantApprover(p, reg.Tenant) {
		return errorf(http.StatusForbidden, "not_tenant_approver", "only an approver of tenant %s, signed in through its identity provider, confirms its registrations", reg.Tenant)
	}
	if reg.State != store.RegistrationPending {
		return errorf(http.StatusConflict, "already_confirmed", "registration %s of account %s is %s already: its external ID was shown when it became active; to get a new one, unregister it and register it again", reg.ID, reg.AccountID, reg.State)
	}
	now := b.now()
	confirmed := reg
	confirmer := person(p)
	externalID := newExternalID()
	confirmed.State, confirmed.ConfirmedBy, confirmed.ConfirmedAt = store.RegistrationActive, &confirmer, now
	confirmed.SealedExternalID = b.sealExternalID(confirmed, externalID)
	if err := b.record(ctx, audit.Event{Type: audit.NetworkRegistrationConfirmed, Actor: actorOf(r), Source: audit.Source{IP: r.RemoteAddr},
		Outcome: audit.Success, Details: registrationDetails(confirmed)}); err != nil {
		return err
	}
	if err := b.store.UpdateNetworkRegistration(ctx, confirmed); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(http.StatusConflict, "registration_changed", "registration %s changed while you confirmed it: 'broker network registrations' shows it now", reg.ID)
		}
		return fmt.Errorf("confirm registration: %w", err)
	}
	confirmed.Version++
	writeJSON(w, http.StatusOK, brokerapi.RegistrationResult{Registration: registrationView(confirmed), ExternalID: externalID})
	return nil
}

// handleUnregister removes a registration: network changes may no longer
// name the account, and the broker forgets the role's external ID.
func (b *Broker) handleUnregister(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	reg, err := b.tenantRegistration(r)
	if err != nil {
		return err
	}
	if err := b.record(ctx, audit.Event{Type: audit.NetworkUnregistered, Actor: actorOf(r), Source: audit.Source{IP: r.RemoteAddr},
		Outcome: audit.Success, Details: registrationDetails(reg)}); err != nil {
		return err
	}
	if err := b.store.DeleteNetworkRegistration(ctx, reg.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errorf(http.StatusNotFound, "registration_not_found", "registration %s was removed meanwhile", reg.ID)
		}
		return fmt.Errorf("unregister: %w", err)
	}
	writeJSON(w, http.StatusOK, registrationView(reg))
	return nil
}

// netSealer returns the AEAD sealing external IDs, or an error when the
// broker has none.
func (b *Broker) netSealer() (cipher.AEAD, error) {
	if b.netSeal == nil {
		return nil, errorf(http.StatusNotImplemented, "network_not_configured", "this broker has no key to seal external IDs with, so it manages no networks")
	}
	return b.netSeal, nil
}

// registered returns the active registration of account to tenant, after
// checking that it registers role, vpc and the route tables. side names
// the side in messages ("BYOC" or "peer"). Whatever is not registered to
// tenant is refused alike, never saying whose it is.
func (b *Broker) registered(ctx context.Context, tenant, side, account, role, vpc string, rtbs []string) (store.NetworkRegistration, error) {
	reg, err := b.store.GetNetworkRegistrationByAccount(ctx, account)
	if errors.Is(err, store.ErrNotFound) || (err == nil && reg.Tenant != tenant) {
		return reg, errorf(http.StatusForbidden, "not_registered", "%s account %s is not registered to tenant %s: its approvers register it with 'broker network register --tenant %s --account %s --role-arn ARN --vpc VPC'", side, account, tenant, tenant, account)
	}
	if err != nil {
		return reg, fmt.Errorf("look up account %s: %w", account, err)
	}
	if reg.State != store.RegistrationActive {
		return reg, errorf(http.StatusForbidden, "registration_pending", "%s account %s's registration (%s) "+registrationWaitMsg, side, account, reg.ID, tenant, reg.ID)
	}
	if role != reg.RoleARN {
		return reg, errorf(http.StatusForbidden, "not_registered", "%s role %s is not the role registered for account %s (%s): name that role, or register the account again with this one", side, role, account, reg.RoleARN)
	}
	if !slices.Contains(reg.VPCIDs, vpc) {
		return reg, errorf(http.StatusForbidden, "not_registered", "%s VPC %s is not registered to tenant %s in account %s (registered: %s): its approvers register it ('broker network unregister %s', then register the account with every VPC)", side, vpc, tenant, account, strings.Join(reg.VPCIDs, ", "), reg.ID)
	}
	if len(reg.RouteTableIDs) > 0 {
		if len(rtbs) == 0 {
			return reg, errorf(http.StatusForbidden, "not_registered", "%s account %s registers only the route tables %s: name those the change needs rather than all of the VPC's", side, account, strings.Join(reg.RouteTableIDs, ", "))
		}
		for _, rt := range rtbs {
			if !slices.Contains(reg.RouteTableIDs, rt) {
				return reg, errorf(http.StatusForbidden, "not_registered", "%s route table %s is not registered to tenant %s in account %s (registered: %s)", side, rt, tenant, account, strings.Join(reg.RouteTableIDs, ", "))
			}
		}
	}
	return reg, nil
}

// checkNetworkConfig checks that a deployment's BYOC side is registered
// to its tenant.
func (b *Broker) checkNetworkConfig(ctx context.Context, tenant string, n *store.NetworkConfig) error {
	_, err := b.registered(ctx, tenant, "BYOC", n.AccountID, n.RoleARN, n.VPCID, n.RouteTableIDs)
	return err
}

// checkNetworkRequest checks that a network change names only what is
// registered to the deployment's tenant: its own BYOC side and the peer.
func (b *Broker) checkNetworkRequest(ctx context.Context, tenant string, n *store.NetworkConfig, spec *store.PeeringSpec) error {
	if err := b.checkNetworkConfig(ctx, tenant, n); err != nil {
		return err
	}
	_, err := b.registered(ctx, tenant, "peer", spec.AccountID, spec.RoleARN, spec.VPCID, spec.RouteTableIDs)
	return err
}

// netTarget is a deployment's BYOC side as netmgr sees it, once checked
// against the tenant's registrations, with the role's external ID.
func (b *Broker) netTarget(ctx context.Context, tenant string, n *store.NetworkConfig) (netmgr.Target, error) {
	if _, err := b.netSealer(); err != nil {
		return netmgr.Target{}, err
	}
	reg, err := b.registered(ctx, tenant, "BYOC", n.AccountID, n.RoleARN, n.VPCID, n.RouteTableIDs)
	if err != nil {
		return netmgr.Target{}, err
	}
	ext, err := b.openExternalID(reg)
	if err != nil {
		return netmgr.Target{}, err
	}
	return netmgr.Target{
		AccountID: n.AccountID, Region: n.Region, VPCID: n.VPCID, RoleARN: n.RoleARN, ExternalID: ext,
		RouteTableIDs: n.RouteTableIDs, LBTags: n.LBTags, PrivateHostname: n.PrivateHostname,
	}, nil
}

// netPeer is the peer side of a network change as netmgr sees it, once
// checked against the tenant's registrations, with the role's external ID.
func (b *Broker) netPeer(ctx context.Context, tenant string, s *store.PeeringSpec) (netmgr.Peer, error) {
	if _, err := b.netSealer(); err != nil {
		return netmgr.Peer{}, err
	}
	reg, err := b.registered(ctx, tenant, "peer", s.AccountID, s.RoleARN, s.VPCID, s.RouteTableIDs)
	if err != nil {
		return netmgr.Peer{}, err
	}
	ext, err := b.openExternalID(reg)
	if err != nil {
		return netmgr.Peer{}, err
	}
	return netmgr.Peer{AccountID: s.AccountID, Region: s.Region, VPCID: s.VPCID, RoleARN: s.RoleARN, ExternalID: ext, RouteTableIDs: s.RouteTableIDs}, nil
}

// netSides returns both sides of a network change, checked and with
// their external IDs.
func (b *Broker) netSides(ctx context.Context, tenant string, n *store.NetworkConfig, s *store.PeeringSpec) (netmgr.Target, netmgr.Peer, error) {
	t, err := b.netTarget(ctx, tenant, n)
	if err != nil {
		return t, netmgr.Peer{}, err
	}
	p, err := b.netPeer(ctx, tenant, s)
	return t, p, err
}
