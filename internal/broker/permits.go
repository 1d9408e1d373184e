package broker

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/access"
	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/store"
)

// maxPermits bounds a deployment's permits, revoked ones included.
const maxPermits = 50

// handlePermits lists a deployment's standing permits.
func (b *Broker) handlePermits(w http.ResponseWriter, r *http.Request) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	out := []brokerapi.Permit{}
	for _, p := range d.Settings.Permits {
		out = append(out, permitView(p))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func permitView(sp store.Permit) brokerapi.Permit {
	v := brokerapi.Permit{ID: sp.ID, Digest: approval.Digest([]byte(sp.Canonical)), CreatedAt: sp.CreatedAt, RevokedBy: sp.RevokedBy, Signers: []string{}}
	if p, err := approval.ParsePermit([]byte(sp.Canonical)); err == nil {
		v.Scopes, v.EngineerGroup, v.MaxGrant = p.Scopes, p.EngineerGroup, p.MaxGrant.String()
		for _, w := range p.Windows {
			v.Windows = append(v.Windows, brokerapi.PermitWindow{Start: w.Start, End: w.End})
		}
	}
	for _, s := range sp.Signers {
		v.Signers = append(v.Signers, access.DisplayName(s))
	}
	if !sp.RevokedAt.IsZero() {
		t := sp.RevokedAt
		v.RevokedAt = &t
	}
	return v
}

// handlePermitStatement answers the permit a customer approver signs: an
// existing one to co-sign, or a new one from the terms given.
func (b *Broker) handlePermitStatement(w http.ResponseWriter, r *http.Request) error {
	var in brokerapi.PermitStatementBody
	if err := decodeJSON(w, r, brokerapi.MaxBody, &in); err != nil {
		return err
	}
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	canon, id, err := b.permitToSign(d, in)
	if err != nil {
		return err
	}
	p := principalFrom(r.Context())
	writeJSON(w, http.StatusOK, brokerapi.PermitStatement{ID: id, Permit: string(canon), Digest: approval.Digest(canon), Issuer: p.Issuer, ClientID: b.ceremonyClient(p)})
	return nil
}

// permitToSign is the canonical permit a customer approver signs for in:
// d's live permit in.ID to co-sign, or a new one from in's terms. The API
// and the web console both call it.
func (b *Broker) permitToSign(d store.DeploymentStatus, in brokerapi.PermitStatementBody) (canon []byte, id string, err error) {
	id = in.ID
	if id != "" {
		i := slices.IndexFunc(d.Settings.Permits, func(p store.Permit) bool { return p.ID == id })
		if i < 0 || !d.Settings.Permits[i].RevokedAt.IsZero() {
			return nil, "", errorf(http.StatusNotFound, "permit_not_found", "deployment %s/%s has no live permit %s ('broker permit list %s/%s')", d.Tenant, d.Name, truncate(id, 60), d.Tenant, d.Name)
		}
		return []byte(d.Settings.Permits[i].Canonical), id, nil
	}
	p := approval.Permit{ID: uuid.NewString(), Deployment: d.ID, Scopes: in.Scopes, EngineerGroup: in.EngineerGroup}
	if in.MaxGrant != "" {
		if p.MaxGrant, err = time.ParseDuration(in.MaxGrant); err != nil {
			return nil, "", errorf(http.StatusBadRequest, "invalid_permit", "max_grant %q: want a Go duration such as 1h", truncate(in.MaxGrant, 40))
		}
	}
	for _, w := range in.Windows {
		p.Windows = append(p.Windows, approval.Window{Start: w.Start.UTC().Truncate(time.Second), End: w.End.UTC().Truncate(time.Second)})
	}
	if err := b.checkPermitTerms(p); err != nil {
		return nil, "", err
	}
	if canon, err = p.Canonical(); err != nil {
		return nil, "", errorf(http.StatusBadRequest, "invalid_permit", "%v", err)
	}
	return canon, p.ID, nil
}

// checkPermitTerms refuses a permit that is malformed, already over, or
// reaching further than a signature may vouch for.
func (b *Broker) checkPermitTerms(p approval.Permit) error {
	if err := p.Validate(); err != nil {
		return errorf(http.StatusBadRequest, "invalid_permit", "permit: %v", err)
	}
	now := b.now()
	for i, w := range p.Windows {
		if !w.End.After(now) {
			return errorf(http.StatusBadRequest, "invalid_permit", "window %d ended at %s: a permit's windows are in the future", i+1, w.End.Format(time.RFC3339))
		}
		if w.End.Sub(now) > approval.MaxPermitReach {
			return errorf(http.StatusBadRequest, "invalid_permit", "window %d ends %s, more than %d days from now: sign a new permit nearer the time", i+1, w.End.Format(time.RFC3339), approval.MaxPermitReach/(24*time.Hour))
		}
	}
	return nil
}

// handleSignPermit stores a permit a customer approver signed, or adds
// their signature to one: verified like an approval's proof, audited.
func (b *Broker) handleSignPermit(w http.ResponseWriter, r *http.Request) error {
	var in brokerapi.SignPermitBody
	if err := decodeJSON(w, r, brokerapi.MaxBody, &in); err != nil {
		return err
	}
	view, err := b.signPermit(r, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, view)
	return nil
}

// signPermit stores the permit in.Permit with the caller's signature
// in.Proof, or adds it to the stored permit; verified like an approval's
// proof, audited. The API and the web console both call it.
func (b *Broker) signPermit(r *http.Request, in brokerapi.SignPermitBody) (brokerapi.Permit, error) {
	var none brokerapi.Permit
	p, err := approval.ParsePermit([]byte(in.Permit))
	if err != nil {
		return none, errorf(http.StatusBadRequest, "invalid_permit", "%v", err)
	}
	b.settingsMu.Lock()
	defer b.settingsMu.Unlock()
	d, err := b.lookup(r)
	if err != nil {
		return none, err
	}
	if p.Deployment != d.ID {
		return none, errorf(http.StatusBadRequest, "invalid_permit", "the permit is for deployment %s, not %s/%s", p.Deployment, d.Tenant, d.Name)
	}
	who := principalFrom(r.Context())
	if err := b.checkProof(r.Context(), who, in.Permit, in.Proof); err != nil {
		return none, b.refuseDeployment(r, d, "approval_proof_invalid", err.Error())
	}
	signer := person(who)
	s := d.Settings
	s.Permits = slices.Clone(s.Permits)
	i := slices.IndexFunc(s.Permits, func(x store.Permit) bool { return x.ID == p.ID })
	switch {
	case i >= 0 && s.Permits[i].Canonical != in.Permit:
		return none, errorf(http.StatusConflict, "permit_changed", "permit %s exists with other terms: co-sign the permit as stored ('broker permit sign %s/%s %s')", p.ID, d.Tenant, d.Name, p.ID)
	case i >= 0 && !s.Permits[i].RevokedAt.IsZero():
		return none, errorf(http.StatusConflict, "permit_revoked", "permit %s was revoked by %s: sign a new one", p.ID, s.Permits[i].RevokedBy)
	case i >= 0 && slices.ContainsFunc(s.Permits[i].Signers, func(x store.Person) bool { return access.SamePerson(x, signer) }):
		return none, errorf(http.StatusConflict, "already_signed", "you signed permit %s already; a signer counts once", p.ID)
	case i < 0:
		if err := b.checkPermitTerms(p); err != nil {
			return none, err
		}
		if len(s.Permits) >= maxPermits {
			return none, errorf(http.StatusConflict, "too_many_permits", "deployment %s/%s has %d permits, the most it keeps: revoke one first", d.Tenant, d.Name, maxPermits)
		}
		s.Permits = append(s.Permits, store.Permit{ID: p.ID, Canonical: in.Permit, CreatedAt: b.now()})
		i = len(s.Permits) - 1
	}
	sp := s.Permits[i]
	sp.Proofs = append(slices.Clone(sp.Proofs), in.Proof)
	sp.Signers = append(slices.Clone(sp.Signers), signer)
	s.Permits[i] = sp
	view := permitView(sp)
	if err := b.record(r.Context(), audit.Event{
		Type: audit.PermitSigned, Actor: actorOf(r), Deployment: d.ID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success,
		Details: map[string]any{"permit": view.ID, "digest": view.Digest, "scopes": view.Scopes, "windows": view.Windows,
			"engineer_group": view.EngineerGroup, "max_grant": view.MaxGrant, "signers": view.Signers},
	}); err != nil {
		return none, err
	}
	if err := b.store.SetDeploymentSettings(r.Context(), d.ID, s); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return none, errorf(http.StatusNotFound, "deployment_not_found", "no deployment %s/%s", d.Tenant, d.Name)
		}
		return none, fmt.Errorf("store permit: %w", err)
	}
	return view, nil
}

// handleRevokePermit revokes a permit: no new grant is issued under it.
func (b *Broker) handleRevokePermit(w http.ResponseWriter, r *http.Request) error {
	view, err := b.revokePermit(r, r.PathValue("permit"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, view)
	return nil
}

// revokePermit revokes permit id of the deployment r names, audited; the
// API and the web console both call it.
func (b *Broker) revokePermit(r *http.Request, id string) (brokerapi.Permit, error) {
	b.settingsMu.Lock()
	defer b.settingsMu.Unlock()
	d, err := b.lookup(r)
	if err != nil {
		return brokerapi.Permit{}, err
	}
	s := d.Settings
	s.Permits = slices.Clone(s.Permits)
	i := slices.IndexFunc(s.Permits, func(x store.Permit) bool { return x.ID == id })
	if i < 0 {
		return brokerapi.Permit{}, errorf(http.StatusNotFound, "permit_not_found", "deployment %s/%s has no permit %s ('broker permit list %s/%s')", d.Tenant, d.Name, truncate(id, 60), d.Tenant, d.Name)
	}
	if s.Permits[i].RevokedAt.IsZero() {
		s.Permits[i].RevokedAt, s.Permits[i].RevokedBy = b.now(), actorOf(r).Subject
		if err := b.record(r.Context(), audit.Event{
			Type: audit.PermitRevoked, Actor: actorOf(r), Deployment: d.ID,
			Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success,
			Details: map[string]any{"permit": id},
		}); err != nil {
			return brokerapi.Permit{}, err
		}
		if err := b.store.SetDeploymentSettings(r.Context(), d.ID, s); err != nil {
			return brokerapi.Permit{}, fmt.Errorf("revoke permit: %w", err)
		}
	}
	return permitView(s.Permits[i]), nil
}

// refuseDeployment records a refused act on a deployment and returns its
// 403.
func (b *Broker) refuseDeployment(r *http.Request, d store.DeploymentStatus, code, msg string) error {
	if err := b.record(r.Context(), audit.Event{
		Type: audit.AuthFailed, Actor: actorOf(r), Deployment: d.ID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Failure, Reason: code,
		Details: map[string]any{"method": r.Method, "path": r.URL.Path, "status": http.StatusForbidden, "message": msg},
	}); err != nil {
		return err
	}
	return errorf(http.StatusForbidden, code, "%s", msg)
}
