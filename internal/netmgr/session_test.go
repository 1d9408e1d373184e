package netmgr

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"

	"github.com/tetherhq/tether/internal/mototest"
)

// stsRecorder is an HTTP client that passes every request on and keeps
// the AssumeRole calls: the form sent and the answer.
type stsRecorder struct {
	next *awshttp.BuildableClient
	mu   sync.Mutex
	sent []url.Values
	got  []string
}

func (r *stsRecorder) Do(req *http.Request) (*http.Response, error) {
	var form url.Values
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		if f, err := url.ParseQuery(string(b)); err == nil && f.Get("Action") == "AssumeRole" {
			form = f
		}
	}
	resp, err := r.next.Do(req)
	if form == nil || err != nil {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	r.mu.Lock()
	r.sent, r.got = append(r.sent, form), append(r.got, string(b))
	r.mu.Unlock()
	return resp, nil
}

// TestSessionNamesRequestAndEngineer: on moto, each account's role is
// assumed with the request as the session name and the engineer as the
// source identity, so that CloudTrail in the customer's account shows
// which request and which engineer acted. Before, every session was
// "tether-netmgr", with no source identity.
func TestSessionNamesRequestAndEngineer(t *testing.T) {
	rec := &stsRecorder{next: awshttp.NewBuildableClient()}
	cfg := baseConfig()
	cfg.HTTPClient = rec
	m, err := New(Config{AWS: cfg, EndpointURL: mototest.Endpoint(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	target := Target{AccountID: byocAccount, Region: "us-east-1", VPCID: "vpc-0123456789abcdef0", RoleARN: roleARN(byocAccount), ExternalID: "x-byoc-secret"}
	peer := Peer{AccountID: peerAccount, Region: "us-east-1", VPCID: "vpc-0fedcba9876543210", RoleARN: roleARN(peerAccount), ExternalID: "x-peer-secret"}
	for _, tt := range []struct {
		tags                   Tags
		wantName, wantIdentity string
	}{
		{Tags{Deployment: "dep-1", Request: "6f1c2a9e-0d4b-4c56-8a8e-2b1f3c4d5e6f", Engineer: "eve@vendor.example"},
			"tether-6f1c2a9e-0d4b-4c56-8a8e-2b1f3c4d5e6f", "eve@vendor.example"},
		// A subject in characters STS refuses, and a name past its 64.
		{Tags{Deployment: "dep-1", Request: "req:2/" + strings.Repeat("x", 80), Engineer: "auth0|eve müller"},
			"tether-req-2-" + strings.Repeat("x", 51), "auth0-eve-m--ller"},
	} {
		// The VPCs do not exist: the plan fails after both roles were
		// assumed, which is all this test looks at.
		_, _ = m.PlanPeering(t.Context(), target, peer, tt.tags)
		rec.mu.Lock()
		sent, got := rec.sent, rec.got
		rec.sent, rec.got = nil, nil
		rec.mu.Unlock()
		if len(sent) != 2 {
			t.Fatalf("plan for %+v assumed %d roles, want 2 (BYOC and peer)", tt.tags, len(sent))
		}
		for i, f := range sent {
			if n := f.Get("RoleSessionName"); n != tt.wantName || len(n) > 64 {
				t.Errorf("AssumeRole %s: RoleSessionName = %q, want %q", f.Get("RoleArn"), n, tt.wantName)
			}
			if id := f.Get("SourceIdentity"); id != tt.wantIdentity {
				t.Errorf("AssumeRole %s: SourceIdentity = %q, want %q", f.Get("RoleArn"), id, tt.wantIdentity)
			}
			// moto answers with the assumed-role ARN CloudTrail records.
			want := regexp.QuoteMeta(":assumed-role/tether-network/" + tt.wantName + "<")
			if !regexp.MustCompile(want).MatchString(got[i]) {
				t.Errorf("AssumeRole %s answered %s, want the session %s", f.Get("RoleArn"), got[i], tt.wantName)
			}
		}
	}

	// Without a request (status), the session keeps the generic name.
	_, _ = m.PeeringStatus(t.Context(), target, peer)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, f := range rec.sent {
		if f.Get("RoleSessionName") != "tether-netmgr" || f.Has("SourceIdentity") {
			t.Errorf("status AssumeRole = %v, want session tether-netmgr without a source identity", f)
		}
	}
}

func TestSessionNameAndSourceIdentity(t *testing.T) {
	valid := regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	for _, tt := range []struct{ in, name, identity string }{
		{"", "tether-netmgr", ""},
		{"r", "tether-r", "r_"},
		{"eve@vendor.example", "tether-eve@vendor.example", "eve@vendor.example"},
		{"aws:root", "tether-aws-root", "aws-root"},
		{"a b\tc/ü", "tether-a-b-c---", "a-b-c---"},
		{strings.Repeat("é", 40), "tether-" + strings.Repeat("-", 57), strings.Repeat("-", 64)},
	} {
		if got := SessionName(tt.in); got != tt.name || !valid.MatchString(got) {
			t.Errorf("SessionName(%q) = %q, want %q", tt.in, got, tt.name)
		}
		if got := SourceIdentity(tt.in); got != tt.identity || (got != "" && !valid.MatchString(got)) {
			t.Errorf("SourceIdentity(%q) = %q, want %q", tt.in, got, tt.identity)
		}
	}
}
