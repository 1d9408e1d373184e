package netmgr

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
)

func validTarget() Target {
	return Target{AccountID: "111111111111", Region: "us-east-1", VPCID: "vpc-0123456789abcdef0", RoleARN: "arn:aws:iam::111111111111:role/tether", ExternalID: "ext-123"}
}

func validPeer() Peer {
	return Peer{AccountID: "222222222222", Region: "us-west-2", VPCID: "vpc-89abcdef", RoleARN: "arn:aws:iam::222222222222:role/tether", ExternalID: "ext-456"}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		t       func(*Target)
		p       func(*Peer)
		want    error
		mention string
	}{
		{name: "valid"},
		{name: "malformed VPC ID", p: func(p *Peer) { p.VPCID = "vpc-XYZ" }, want: ErrInvalid, mention: `"vpc-XYZ"`},
		{name: "short account", t: func(t *Target) { t.AccountID = "1234" }, want: ErrInvalid, mention: `"1234": want 12 digits`},
		{name: "bad region", t: func(t *Target) { t.Region = "us-east" }, want: ErrInvalid, mention: "us-east"},
		{name: "bad route table", t: func(t *Target) { t.RouteTableIDs = []string{"rtb-nothex!"} }, want: ErrInvalid, mention: "rtb-nothex!"},
		{name: "role in another account", p: func(p *Peer) { p.RoleARN = "arn:aws:iam::333333333333:role/x" }, want: ErrInvalid, mention: "333333333333"},
		{name: "role without external ID", p: func(p *Peer) { p.ExternalID = "" }, want: ErrInvalid, mention: "external ID"},
		{name: "port out of range", t: func(t *Target) { t.ServicePorts = []int32{0} }, want: ErrInvalid, mention: "port 0"},
		{name: "bad hostname", t: func(t *Target) { t.PrivateHostname = "Not_A_Host" }, want: ErrInvalid, mention: "Not_A_Host"},
		{name: "China peer", p: func(p *Peer) { p.Region = "cn-north-1"; p.RoleARN = "arn:aws-cn:iam::222222222222:role/tether" }, want: ErrPartition, mention: "aws-cn"},
		{name: "GovCloud peer", p: func(p *Peer) { p.Region = "us-gov-west-1"; p.RoleARN = "" }, want: ErrPartition, mention: "aws-us-gov"},
		{name: "role ARN of another partition", p: func(p *Peer) { p.RoleARN = "arn:aws-cn:iam::222222222222:role/tether" }, want: ErrPartition, mention: "aws-cn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, p := validTarget(), validPeer()
			if tt.t != nil {
				tt.t(&tg)
			}
			if tt.p != nil {
				tt.p(&p)
			}
			err := validatePair(tg, p, &Tags{Deployment: "dep-1"})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("validatePair = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("validatePair = %v, want %v mentioning %q", err, tt.want, tt.mention)
			}
		})
	}
}

// failServer fails the test on any request: validation must not call AWS.
func failServer(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected AWS call %s %s", r.Method, r.URL)
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestInvalidInputMakesNoCall(t *testing.T) {
	m, err := New(Config{AWS: baseConfig(), EndpointURL: failServer(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	tg, p := validTarget(), validPeer()
	p.VPCID = "vpc-XYZ"
	for name, f := range map[string]func() error{
		"PlanPeering":     func() error { _, err := m.PlanPeering(t.Context(), tg, p, Tags{Deployment: "d"}); return err },
		"ApplyPeering":    func() error { _, err := m.ApplyPeering(t.Context(), tg, p, Tags{Deployment: "d"}); return err },
		"TeardownPeering": func() error { _, err := m.TeardownPeering(t.Context(), tg, p, Tags{Deployment: "d"}); return err },
		"EnableIngress":   func() error { _, err := m.EnableIngress(t.Context(), tg, p, Tags{Deployment: "d"}); return err },
	} {
		if err := f(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s(vpc-XYZ) = %v, want ErrInvalid", name, err)
		}
	}
	p = validPeer()
	p.Region, p.RoleARN = "cn-north-1", ""
	if _, err := m.PlanPeering(t.Context(), tg, p, Tags{Deployment: "d"}); !errors.Is(err, ErrPartition) {
		t.Errorf("PlanPeering(cn-north-1 peer) = %v, want ErrPartition", err)
	}
	if _, err := m.ApplyPeering(t.Context(), tg, validPeer(), Tags{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ApplyPeering without a deployment tag = %v, want ErrInvalid", err)
	}
}

// TestPermissionError checks the mapping of access-denied errors. moto
// does not enforce IAM, so a fake error stands in for AWS's.
func TestPermissionError(t *testing.T) {
	for _, code := range []string{"AccessDenied", "UnauthorizedOperation", "AccessDeniedException"} {
		err := permissionError("ec2:CreateRoute", "111111111111", &smithy.GenericAPIError{Code: code, Message: "not authorized"})
		if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "ec2:CreateRoute denied in account 111111111111") {
			t.Errorf("permissionError(%s) = %v, want ErrPermission naming ec2:CreateRoute and the account", code, err)
		}
		var apiErr smithy.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode() != code {
			t.Errorf("permissionError(%s) lost the AWS error: %v", code, err)
		}
	}
	other := &smithy.GenericAPIError{Code: "InvalidParameterValue"}
	if err := permissionError("ec2:CreateRoute", "111111111111", other); err != other {
		t.Errorf("permissionError(InvalidParameterValue) = %v, want it unchanged", err)
	}
}

// ec2Fake answers EC2 query calls: each request gets the next response.
func ec2Fake(t *testing.T, responses ...[2]string) (url string, requests *atomic.Int32) {
	requests = new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(requests.Add(1)) - 1
		if n >= len(responses) {
			t.Errorf("unexpected request %d", n+1)
			n = len(responses) - 1
		}
		w.Header().Set("Content-Type", "text/xml")
		w.Header().Set("X-Amzn-Requestid", "req-"+string(rune('a'+n)))
		status := http.StatusOK
		if responses[n][0] != "" {
			status = http.StatusBadRequest
			if responses[n][0] == "UnauthorizedOperation" {
				status = http.StatusForbidden
			}
			w.WriteHeader(status)
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>` + responses[n][0] + `</Code><Message>` + responses[n][1] + `</Message></Error></Errors><RequestID>req-` + string(rune('a'+n)) + `</RequestID></Response>`))
			return
		}
		w.Write([]byte(responses[n][1]))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, requests
}

func fakeManager(t *testing.T, url string, rec func(context.Context, Call) error) *Manager {
	cfg := Config{AWS: baseConfig(), EndpointURL: url, Recorder: rec, Logger: testLogger(t), MaxAttempts: 4}
	cfg.backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPermissionDeniedCall goes through the real client and middleware:
// an UnauthorizedOperation answer becomes ErrPermission naming the action
// and account, and is recorded.
func TestPermissionDeniedCall(t *testing.T) {
	url, _ := ec2Fake(t, [2]string{"UnauthorizedOperation", "You are not authorized to perform this operation."})
	var calls []Call
	m := fakeManager(t, url, func(_ context.Context, c Call) error { calls = append(calls, c); return nil })
	s, err := m.session(t.Context(), side{account: "111111111111", region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	err = m.putRoute(t.Context(), s, "rtb-01234567", mustPrefix("10.1.0.0/16"), "pcx-01234567", false)
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "ec2:CreateRoute denied in account 111111111111") {
		t.Errorf("putRoute = %v, want ErrPermission naming ec2:CreateRoute", err)
	}
	if len(calls) != 1 || calls[0].Action != "CreateRoute" || calls[0].Err == nil || calls[0].RequestID == "" {
		t.Errorf("recorded %+v, want one failed CreateRoute with a request ID", calls)
	}
}

// TestThrottlingRetried checks that the SDK's retryer, as New sets it up,
// retries RequestLimitExceeded.
func TestThrottlingRetried(t *testing.T) {
	ok := `<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>req-c</requestId><vpcSet><item><vpcId>vpc-0123456789abcdef0</vpcId><cidrBlock>10.0.0.0/16</cidrBlock></item></vpcSet></DescribeVpcsResponse>`
	url, requests := ec2Fake(t,
		[2]string{"RequestLimitExceeded", "Request limit exceeded."},
		[2]string{"Throttling", "Rate exceeded"},
		[2]string{"", ok})
	m := fakeManager(t, url, nil)
	s, err := m.session(t.Context(), side{account: "111111111111", region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	vpc, err := describeVPC(t.Context(), s, "BYOC", "vpc-0123456789abcdef0")
	if err != nil || aws.ToString(vpc.CidrBlock) != "10.0.0.0/16" {
		t.Fatalf("describeVPC = %v, %v; want the VPC after retries", vpc, err)
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("requests = %d, want 3 (two throttled, one answered)", n)
	}
}

// TestAssumeRoleRefused uses a fake STS: moto does not check external IDs.
func TestAssumeRoleRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not authorized to perform sts:AssumeRole</Message></Error><RequestId>r-1</RequestId></ErrorResponse>`))
	}))
	t.Cleanup(srv.Close)
	m := fakeManager(t, srv.URL, nil)
	_, err := m.session(t.Context(), side{account: "111111111111", region: "us-east-1", role: "arn:aws:iam::111111111111:role/tether", externalID: "wrong"})
	if !errors.Is(err, ErrExternalID) || !strings.Contains(err.Error(), "external ID") {
		t.Errorf("session = %v, want ErrExternalID with advice", err)
	}
}

// TestRegistryCoversClients checks that every client method netmgr can
// call is in the registry, and every registered operation is callable.
func TestRegistryCoversClients(t *testing.T) {
	var ops []string
	for service, typ := range map[string]reflect.Type{
		"ec2":                  reflect.TypeFor[ec2API](),
		"elasticloadbalancing": reflect.TypeFor[elbAPI](),
		"route53":              reflect.TypeFor[route53API](),
		"sts":                  reflect.TypeFor[stsAPI](),
	} {
		for i := range typ.NumMethod() {
			name := typ.Method(i).Name
			ops = append(ops, service+":"+name)
			if _, ok := lookup(service, name); !ok {
				t.Errorf("%s:%s is a client method but not in the registry", service, name)
			}
		}
	}
	for _, a := range registry {
		if !slices.Contains(ops, a.name()) {
			t.Errorf("registry has %s, which no client interface declares", a.name())
		}
	}
	if got := Actions(); !slices.IsSorted(got) || slices.Contains(got, "sts:AssumeRole") || !slices.Contains(got, "ec2:CreateTags") {
		t.Errorf("Actions() = %q, want sorted, with ec2:CreateTags and without sts:AssumeRole", got)
	}
}

// TestGuardRefusesUnauditedMutation checks that a mutating call outside
// Manager.mutate fails before it reaches AWS.
func TestGuardRefusesUnauditedMutation(t *testing.T) {
	m := fakeManager(t, failServer(t), nil)
	s, err := m.session(t.Context(), side{account: "111111111111", region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.ec2.CreateRoute(t.Context(), &ec2.CreateRouteInput{RouteTableId: aws.String("rtb-01234567"), DestinationCidrBlock: aws.String("10.0.0.0/16")})
	if err == nil || !strings.Contains(err.Error(), "outside Manager.mutate") {
		t.Errorf("CreateRoute outside mutate = %v, want refused", err)
	}
}
