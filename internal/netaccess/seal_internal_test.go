package netaccess

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
)

// TestSidesUseSealedExternalID: the service assumes a registered role
// with the external ID it made and sealed, looked up by account, and with
// nothing a caller gave; a sealed ID moved to another registration, or
// opened with another key, does not open. (Moved from the broker's
// TestNetSidesUseSealedExternalID with the code it tests.)
func TestSidesUseSealedExternalID(t *testing.T) {
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	aead, err := LoadSealKey("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	svc := New(Config{Store: s, Seal: aead})
	ids := map[string]string{}
	for _, r := range []struct{ id, tenant, account, vpc string }{
		{"r-byoc", "acme", "111111111111", "vpc-11112222"},
		{"r-peer", "acme", "222222222222", "vpc-22223333"},
		{"r-globex", "globex", "333333333333", "vpc-33334444"},
	} {
		reg := store.NetworkRegistration{ID: r.id, Tenant: r.tenant, AccountID: r.account, RoleARN: "arn:aws:iam::" + r.account + ":role/T",
			VPCIDs: []string{r.vpc}, State: store.RegistrationActive, Version: 1}
		ids[r.id] = newExternalID()
		reg.SealedExternalID = sealExternalID(aead, reg, ids[r.id])
		if err := s.CreateNetworkRegistration(ctx, reg); err != nil {
			t.Fatal(err)
		}
	}
	n := &store.NetworkConfig{AccountID: "111111111111", Region: "us-east-1", VPCID: "vpc-11112222", RoleARN: "arn:aws:iam::111111111111:role/T"}
	spec := &store.PeeringSpec{Kind: "peering", AccountID: "222222222222", Region: "us-east-1", VPCID: "vpc-22223333", RoleARN: "arn:aws:iam::222222222222:role/T"}
	tgt, peer, err := svc.Sides(ctx, "acme", n, spec)
	if err != nil {
		t.Fatal(err)
	}
	if tgt.ExternalID != ids["r-byoc"] || peer.ExternalID != ids["r-peer"] {
		t.Errorf("Sides external IDs = %q, %q; want the sealed %q, %q", tgt.ExternalID, peer.ExternalID, ids["r-byoc"], ids["r-peer"])
	}
	// globex's account, named by acme: refused, whatever else is right.
	stolen := &store.PeeringSpec{Kind: "peering", AccountID: "333333333333", Region: "us-east-1", VPCID: "vpc-33334444", RoleARN: "arn:aws:iam::333333333333:role/T"}
	if _, _, err := svc.Sides(ctx, "acme", n, stolen); err == nil {
		t.Errorf("Sides(acme, globex's account) = nil error, want a refusal")
	}

	// A sealed ID moved to another registration does not open.
	byoc, _ := s.GetNetworkRegistration(ctx, "r-byoc")
	glob, _ := s.GetNetworkRegistration(ctx, "r-globex")
	glob.SealedExternalID = byoc.SealedExternalID
	if got, err := openExternalID(aead, glob); err == nil {
		t.Errorf("openExternalID(moved seal) = %q, want an error", got)
	}
	// Nor with another broker's key.
	other, _ := LoadSealKey("", t.TempDir())
	if got, err := openExternalID(other, byoc); err == nil {
		t.Errorf("openExternalID(another key) = %q, want an error", got)
	}
}
