// Package netmgr plans, applies, checks and tears down the AWS network
// plumbing between a BYOC deployment's VPC and a customer's VPC: the VPC
// peering connection, the routes on both sides, the load balancer's
// security group rules and, for private ingress, a Route 53 private hosted
// zone that makes the private endpoint resolve from the peer VPC.
//
// It works like Terraform: a plan reads and validates before anything is
// changed, apply converges (a second apply changes nothing, and an
// interrupted apply is completed by the next), status reports each piece
// as ok, missing or drifted, and teardown removes only what Tether created,
// found by its tags and rule descriptions. Every call that changes AWS is
// reported to [Config.Recorder] for the audit log.
//
// The broker reaches each account by assuming a role there with an
// external ID; deploy/aws/tether-network-role.yaml creates that role with
// exactly the permissions of [Actions].
package netmgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

// Sentinel errors; test with [errors.Is].
var (
	// ErrInvalid reports a malformed input: an ID, account, region, CIDR,
	// port or hostname.
	ErrInvalid = errors.New("invalid input")
	// ErrOverlap reports that the peer VPC's CIDR overlaps the BYOC VPC's
	// or that of another VPC the BYOC VPC is peered with.
	ErrOverlap = errors.New("cidr overlap")
	// ErrCIDRTooSmall reports a BYOC VPC smaller than /23.
	ErrCIDRTooSmall = errors.New("cidr too small")
	// ErrPartition reports two sides in different AWS partitions (aws,
	// aws-cn, aws-us-gov, ...), which cannot be peered.
	ErrPartition = errors.New("different aws partitions")
	// ErrPermission reports an AWS call the role may not make.
	ErrPermission = errors.New("permission denied")
	// ErrExternalID reports that sts:AssumeRole was refused: a wrong
	// external ID, a trust policy that does not name the broker, or a
	// broker not allowed to call sts:AssumeRole.
	ErrExternalID = errors.New("assume role refused")
	// ErrNotFound reports a VPC, route table, load balancer or security
	// group that does not exist.
	ErrNotFound = errors.New("not found")
)

// Target is the BYOC side of one deployment.
type Target struct {
	AccountID, Region, VPCID string
	// RoleARN and ExternalID name the role Tether assumes in the BYOC
	// account. An empty RoleARN uses the broker's own credentials.
	RoleARN, ExternalID string
	// RouteTableIDs are the BYOC route tables that get the route back to
	// the peer; empty means every route table of the VPC.
	RouteTableIDs []string
	// LBTags find the private load balancer; default
	// {"tether:ingress": "private"}.
	LBTags map[string]string
	// LBSecurityGroupPrefix is the name prefix of the private load
	// balancer's security group; default "k8s-istioing-istioing-".
	LBSecurityGroupPrefix string
	// ServicePorts are opened to the peer on that security group; default
	// 8443 (HTTPS) and 9440 (native TLS).
	ServicePorts []int32
	// PrivateHostname is the private endpoint, such as
	// "abc123-private.us-east-1.aws.clickhouse.example"; needed for
	// ingress only.
	PrivateHostname string
}

// Peer is the customer's VPC to peer with.
type Peer struct {
	AccountID, Region, VPCID string
	// RoleARN and ExternalID name the role Tether assumes in the peer
	// account. An empty RoleARN uses the broker's own credentials.
	RoleARN, ExternalID string
	// RouteTableIDs are the peer route tables that need ClickHouse; empty
	// means every route table of the VPC.
	RouteTableIDs []string
	// PublicCIDROK reports whether the customer registered a CIDR of the
	// peer VPC that is not private address space (see [IsPrivateCIDR]);
	// nil refuses every such CIDR.
	PublicCIDROK func(netip.Prefix) bool
}

// Tags identify what Tether creates. They are written as tether:deployment
// and tether:request, with tether:managed=true, on everything created.
// Deployment is required: teardown finds Tether's resources by it.
//
// Request and Engineer also name the session in each account, so that
// CloudTrail shows who acted: the assumed role's session name is
// "tether-" and the request ID, and its source identity
// (sts:SourceIdentity) the engineer, each cut to AWS's character set and
// 64 characters ([SessionName], [SourceIdentity]).
type Tags struct {
	Deployment, Request string
	// Engineer is who asked for the operation (an email, else the
	// subject); empty sets no source identity.
	Engineer string
}

// Call is one AWS call that changes something, for the audit log.
type Call struct {
	Service, Action, Account, Region string
	ResourceIDs                      []string
	RequestID                        string // the AWS request ID, if AWS answered
	Err                              error
}

// Config configures a [Manager]. AWS must hold the broker's credentials;
// every other field has a default.
type Config struct {
	// AWS holds the broker's own credentials, region and HTTP client.
	// Its Retryer, if nil, becomes the SDK's standard retryer, which
	// retries throttling, with MaxAttempts attempts.
	AWS aws.Config
	// EndpointURL, if set, overrides the endpoint of every service (for
	// moto_server in tests).
	EndpointURL string
	// MaxAttempts bounds the attempts of each AWS call; default 3.
	MaxAttempts int
	// WaitTimeout bounds each wait for a peering connection to exist,
	// become active or be deleted; default 5 minutes.
	WaitTimeout time.Duration
	// Recorder is called after every call that changes AWS, success or
	// failure; an error from it stops the operation. Nil records nothing.
	Recorder func(ctx context.Context, c Call) error
	// PrivateDomain is the vendor's DNS domain: private ingress makes
	// hosted zones only for names under it (see [ValidatePrivateHostname]).
	// Empty refuses every private ingress.
	PrivateDomain string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives progress; default discards.
	Logger *slog.Logger

	// backoff, set by tests, replaces the retryer's backoff.
	backoff retry.BackoffDelayer
}

// Manager manages peering and private ingress. It is safe for concurrent
// use; concurrent operations on the same pair of VPCs are not.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	sessions map[sessionKey]*session
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.MaxAttempts < 1 {
		return nil, fmt.Errorf("netmgr config: MaxAttempts %d, want at least 1: %w", cfg.MaxAttempts, ErrInvalid)
	}
	if cfg.PrivateDomain != "" {
		if err := ValidatePrivateDomain(cfg.PrivateDomain); err != nil {
			return nil, fmt.Errorf("netmgr config: %w", err)
		}
	}
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Recorder == nil {
		cfg.Recorder = func(context.Context, Call) error { return nil }
	}
	cfg.AWS = cfg.AWS.Copy()
	if cfg.EndpointURL != "" {
		cfg.AWS.BaseEndpoint = aws.String(cfg.EndpointURL)
	}
	if cfg.AWS.Retryer == nil {
		attempts, backoff := cfg.MaxAttempts, cfg.backoff
		cfg.AWS.Retryer = func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = attempts
				if backoff != nil {
					o.Backoff = backoff
				}
			})
		}
	}
	return &Manager{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "netmgr"),
		sessions: make(map[sessionKey]*session),
	}, nil
}

// The AWS clients, as the few methods netmgr calls. Every method here must
// be in the action registry (see registry.go); a test checks it.
type (
	ec2API interface {
		DescribeVpcs(context.Context, *ec2.DescribeVpcsInput, ...func(*ec2.Options)) (*ec2.DescribeVpcsOutput, error)
		DescribeSubnets(context.Context, *ec2.DescribeSubnetsInput, ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
		DescribeRouteTables(context.Context, *ec2.DescribeRouteTablesInput, ...func(*ec2.Options)) (*ec2.DescribeRouteTablesOutput, error)
		DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
		DescribeSecurityGroupRules(context.Context, *ec2.DescribeSecurityGroupRulesInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupRulesOutput, error)
		DescribeVpcPeeringConnections(context.Context, *ec2.DescribeVpcPeeringConnectionsInput, ...func(*ec2.Options)) (*ec2.DescribeVpcPeeringConnectionsOutput, error)
		CreateVpcPeeringConnection(context.Context, *ec2.CreateVpcPeeringConnectionInput, ...func(*ec2.Options)) (*ec2.CreateVpcPeeringConnectionOutput, error)
		AcceptVpcPeeringConnection(context.Context, *ec2.AcceptVpcPeeringConnectionInput, ...func(*ec2.Options)) (*ec2.AcceptVpcPeeringConnectionOutput, error)
		DeleteVpcPeeringConnection(context.Context, *ec2.DeleteVpcPeeringConnectionInput, ...func(*ec2.Options)) (*ec2.DeleteVpcPeeringConnectionOutput, error)
		CreateRoute(context.Context, *ec2.CreateRouteInput, ...func(*ec2.Options)) (*ec2.CreateRouteOutput, error)
		ReplaceRoute(context.Context, *ec2.ReplaceRouteInput, ...func(*ec2.Options)) (*ec2.ReplaceRouteOutput, error)
		DeleteRoute(context.Context, *ec2.DeleteRouteInput, ...func(*ec2.Options)) (*ec2.DeleteRouteOutput, error)
		AuthorizeSecurityGroupIngress(context.Context, *ec2.AuthorizeSecurityGroupIngressInput, ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error)
		RevokeSecurityGroupIngress(context.Context, *ec2.RevokeSecurityGroupIngressInput, ...func(*ec2.Options)) (*ec2.RevokeSecurityGroupIngressOutput, error)
	}
	elbAPI interface {
		DescribeLoadBalancers(context.Context, *elb.DescribeLoadBalancersInput, ...func(*elb.Options)) (*elb.DescribeLoadBalancersOutput, error)
		DescribeTags(context.Context, *elb.DescribeTagsInput, ...func(*elb.Options)) (*elb.DescribeTagsOutput, error)
	}
	route53API interface {
		ListHostedZonesByName(context.Context, *route53.ListHostedZonesByNameInput, ...func(*route53.Options)) (*route53.ListHostedZonesByNameOutput, error)
		GetHostedZone(context.Context, *route53.GetHostedZoneInput, ...func(*route53.Options)) (*route53.GetHostedZoneOutput, error)
		ListTagsForResource(context.Context, *route53.ListTagsForResourceInput, ...func(*route53.Options)) (*route53.ListTagsForResourceOutput, error)
		ListResourceRecordSets(context.Context, *route53.ListResourceRecordSetsInput, ...func(*route53.Options)) (*route53.ListResourceRecordSetsOutput, error)
		CreateHostedZone(context.Context, *route53.CreateHostedZoneInput, ...func(*route53.Options)) (*route53.CreateHostedZoneOutput, error)
		ChangeTagsForResource(context.Context, *route53.ChangeTagsForResourceInput, ...func(*route53.Options)) (*route53.ChangeTagsForResourceOutput, error)
		ChangeResourceRecordSets(context.Context, *route53.ChangeResourceRecordSetsInput, ...func(*route53.Options)) (*route53.ChangeResourceRecordSetsOutput, error)
		DeleteHostedZone(context.Context, *route53.DeleteHostedZoneInput, ...func(*route53.Options)) (*route53.DeleteHostedZoneOutput, error)
	}
	stsAPI interface {
		AssumeRole(context.Context, *sts.AssumeRoleInput, ...func(*sts.Options)) (*sts.AssumeRoleOutput, error)
	}
)

var (
	_ ec2API     = (*ec2.Client)(nil)
	_ elbAPI     = (*elb.Client)(nil)
	_ route53API = (*route53.Client)(nil)
	_ stsAPI     = (*sts.Client)(nil)
)

// sessionKey identifies a set of clients.
type sessionKey struct{ account, region, role, externalID, sessionName, sourceIdentity string }

// maxSessions bounds the cached sessions: each request names its own.
const maxSessions = 256

// session holds the clients for one account and region, with the assumed
// role's credentials.
type session struct {
	account, region string
	ec2             ec2API
	elb             elbAPI
	r53             route53API
}

// side is what a session needs to know of a Target or Peer.
type side struct{ account, region, role, externalID, sessionName, sourceIdentity string }

func targetSide(t Target) side {
	return side{account: t.AccountID, region: t.Region, role: t.RoleARN, externalID: t.ExternalID}
}

func peerSide(p Peer) side {
	return side{account: p.AccountID, region: p.Region, role: p.RoleARN, externalID: p.ExternalID}
}

// actingFor names the session after the request and the engineer of
// tags, if any.
func (s side) actingFor(tags *Tags) side {
	s.sessionName, s.sourceIdentity = SessionName(""), ""
	if tags != nil {
		s.sessionName, s.sourceIdentity = SessionName(tags.Request), SourceIdentity(tags.Engineer)
	}
	return s
}

// SessionName is the role session name of an operation for request:
// "tether-" and the request ID, in the characters AWS allows
// ([\w+=,.@-]; others become '-') and at most 64 of them;
// "tether-netmgr" without a request.
func SessionName(request string) string {
	if request == "" {
		return "tether-netmgr"
	}
	return awsSessionChars("tether-" + request)
}

// SourceIdentity is the source identity of an operation by engineer: the
// engineer in the characters AWS allows ([\w+=,.@-]; others become '-'),
// at most 64 of them and at least 2 (padded with '_'); "" without an
// engineer.
func SourceIdentity(engineer string) string {
	if engineer == "" {
		return ""
	}
	id := awsSessionChars(engineer)
	for len(id) < 2 {
		id += "_"
	}
	return id
}

// awsSessionChars maps s to the characters of an STS role session name
// or source identity and cuts it to their limit of 64.
func awsSessionChars(s string) string {
	b := make([]byte, 0, min(len(s), 64))
	for i := 0; i < len(s) && len(b) < 64; i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("_+=,.@-", c) >= 0:
			b = append(b, c)
		default:
			b = append(b, '-')
		}
	}
	return string(b)
}

// session returns the cached clients for s, assuming its role (and so
// checking the external ID) the first time.
func (m *Manager) session(ctx context.Context, s side) (*session, error) {
	key := sessionKey(s)
	m.mu.Lock()
	sess, ok := m.sessions[key]
	m.mu.Unlock()
	if ok {
		return sess, nil
	}

	cfg := m.cfg.AWS.Copy()
	cfg.Region = s.region
	if s.role != "" {
		stsClient := sts.NewFromConfig(cfg, func(o *sts.Options) {
			o.APIOptions = append(o.APIOptions, guard(""))
		})
		cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stsClient, s.role, func(o *stscreds.AssumeRoleOptions) {
			o.ExternalID = aws.String(s.externalID)
			o.RoleSessionName = s.sessionName
			if o.RoleSessionName == "" {
				o.RoleSessionName = SessionName("")
			}
			if s.sourceIdentity != "" {
				o.SourceIdentity = aws.String(s.sourceIdentity)
			}
		}))
		if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
			return nil, assumeRoleError(s, err)
		}
	}
	g := guard(s.account)
	sess = &session{
		account: s.account,
		region:  s.region,
		ec2:     ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.APIOptions = append(o.APIOptions, g) }),
		elb:     elb.NewFromConfig(cfg, func(o *elb.Options) { o.APIOptions = append(o.APIOptions, g) }),
		r53:     route53.NewFromConfig(cfg, func(o *route53.Options) { o.APIOptions = append(o.APIOptions, g) }),
	}
	m.mu.Lock()
	if len(m.sessions) >= maxSessions {
		clear(m.sessions) // each is one AssumeRole away
	}
	m.sessions[key] = sess
	m.mu.Unlock()
	return sess, nil
}

// assumeRoleError explains a failed sts:AssumeRole.
func assumeRoleError(s side, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode() == "AccessDenied" || apiErr.ErrorCode() == "AccessDeniedException") {
		return fmt.Errorf("assume role %s in account %s: refused; check that the external ID matches the role's trust policy (sts:ExternalId), that the trust policy names the broker's principal, and that the broker may call sts:AssumeRole: %w: %w", s.role, s.account, ErrExternalID, err)
	}
	return fmt.Errorf("assume role %s in account %s: %w", s.role, s.account, err)
}
