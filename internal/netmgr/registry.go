package netmgr

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// action is one AWS API operation netmgr may call.
type action struct {
	service, op string // IAM service prefix and operation name
	// mutating calls change AWS: they must run inside [Manager.mutate],
	// which records them.
	mutating bool
	// broker actions run with the broker's own credentials, not the
	// assumed role's, so they are not in [Actions].
	broker bool
	// implies lists further IAM actions AWS checks for the call, such as
	// ec2:CreateTags for tagging on create.
	implies []string
}

// registry is every operation the clients may call. The guard middleware
// refuses any other, and [Actions] is derived from it, so the IAM policy
// cannot fall behind the code.
var registry = []action{
	{service: "ec2", op: "DescribeVpcs"},
	{service: "ec2", op: "DescribeSubnets"},
	{service: "ec2", op: "DescribeRouteTables"},
	{service: "ec2", op: "DescribeSecurityGroups"},
	{service: "ec2", op: "DescribeSecurityGroupRules"},
	{service: "ec2", op: "DescribeVpcPeeringConnections"},
	{service: "ec2", op: "CreateVpcPeeringConnection", mutating: true, implies: []string{"ec2:CreateTags"}},
	{service: "ec2", op: "AcceptVpcPeeringConnection", mutating: true},
	{service: "ec2", op: "DeleteVpcPeeringConnection", mutating: true},
	{service: "ec2", op: "CreateRoute", mutating: true},
	{service: "ec2", op: "ReplaceRoute", mutating: true},
	{service: "ec2", op: "DeleteRoute", mutating: true},
	{service: "ec2", op: "AuthorizeSecurityGroupIngress", mutating: true, implies: []string{"ec2:CreateTags"}},
	{service: "ec2", op: "RevokeSecurityGroupIngress", mutating: true},
	{service: "elasticloadbalancing", op: "DescribeLoadBalancers"},
	{service: "elasticloadbalancing", op: "DescribeTags"},
	{service: "route53", op: "ListHostedZonesByName"},
	{service: "route53", op: "GetHostedZone"},
	{service: "route53", op: "ListTagsForResource"},
	{service: "route53", op: "ListResourceRecordSets"},
	// A private hosted zone is created with its VPC: AWS also checks
	// ec2:DescribeVpcs, which is in the registry already.
	{service: "route53", op: "CreateHostedZone", mutating: true},
	{service: "route53", op: "ChangeTagsForResource", mutating: true},
	{service: "route53", op: "ChangeResourceRecordSets", mutating: true},
	{service: "route53", op: "DeleteHostedZone", mutating: true},
	// The session carries the engineer as its source identity: the
	// broker's principal and the role's trust policy must both allow
	// sts:SetSourceIdentity.
	{service: "sts", op: "AssumeRole", broker: true, implies: []string{"sts:SetSourceIdentity"}},
}

// iamPrefix maps the SDK's service IDs to IAM service prefixes.
var iamPrefix = map[string]string{
	"EC2":                       "ec2",
	"Elastic Load Balancing v2": "elasticloadbalancing",
	"Route 53":                  "route53",
	"STS":                       "sts",
}

func lookup(service, op string) (action, bool) {
	for _, a := range registry {
		if a.service == service && a.op == op {
			return a, true
		}
	}
	return action{}, false
}

func (a action) name() string { return a.service + ":" + a.op }

// Actions returns, sorted, every IAM action the role Tether assumes needs:
// each operation the clients can call and each action AWS checks with them.
// deploy/aws/tether-network-role.yaml grants exactly these.
func Actions() []string {
	var out []string
	for _, a := range registry {
		if a.broker {
			continue
		}
		out = append(out, a.name())
		out = append(out, a.implies...)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// BrokerActions returns the IAM actions the broker's own principal needs:
// sts:AssumeRole on the roles it is given, and sts:SetSourceIdentity to
// name the engineer in the session. The role's trust policy must allow
// the same two.
func BrokerActions() []string {
	var out []string
	for _, a := range registry {
		if a.broker {
			out = append(out, a.name())
			out = append(out, a.implies...)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// auditKey is the context key of the *audit a mutating call fills in.
type auditKey struct{}

// audit is what the guard learns of a mutating call for its record.
type audit struct {
	action    action
	requestID string
}

// guard returns the middleware every client runs. It refuses operations
// not in the registry and mutating operations outside [Manager.mutate];
// captures the AWS request ID for the audit record; and, when account is
// set, turns access-denied errors into [ErrPermission] naming the IAM
// action and account.
func guard(account string) func(*middleware.Stack) error {
	mw := middleware.InitializeMiddlewareFunc("TetherGuard", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
		service := iamPrefix[awsmiddleware.GetServiceID(ctx)]
		op := awsmiddleware.GetOperationName(ctx)
		a, ok := lookup(service, op)
		if !ok {
			return middleware.InitializeOutput{}, middleware.Metadata{}, fmt.Errorf("netmgr: %s:%s is not in the action registry; add it to registry.go", service, op)
		}
		rec, _ := ctx.Value(auditKey{}).(*audit)
		if a.mutating && rec == nil {
			return middleware.InitializeOutput{}, middleware.Metadata{}, fmt.Errorf("netmgr: %s called outside Manager.mutate, so it would not be audited", a.name())
		}
		out, md, err := next.HandleInitialize(ctx, in)
		if rec != nil {
			rec.action = a
			rec.requestID, _ = awsmiddleware.GetRequestIDMetadata(md)
			var re *awshttp.ResponseError
			if rec.requestID == "" && errors.As(err, &re) {
				rec.requestID = re.ServiceRequestID()
			}
		}
		if err != nil && account != "" {
			err = permissionError(a.name(), account, err)
		}
		return out, md, err
	})
	return func(s *middleware.Stack) error { return s.Initialize.Add(mw, middleware.After) }
}

// deniedCodes are the error codes AWS services use for a missing IAM
// permission.
var deniedCodes = []string{"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"}

// permissionError turns an access-denied error from AWS into one wrapping
// [ErrPermission] that names the IAM action and account; others pass.
func permissionError(action, account string, err error) error {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || !slices.Contains(deniedCodes, apiErr.ErrorCode()) {
		return err
	}
	return fmt.Errorf("%s denied in account %s; grant it to Tether's role there (deploy/aws/tether-network-role.yaml): %w: %w", action, account, ErrPermission, err)
}

// mutate runs fn, which makes one mutating call with the context it is
// given, and records the call. fn returns the IDs of the resources it
// created, which join ids in the record. An error from the recorder
// stops the operation even when the call succeeded.
func (m *Manager) mutate(ctx context.Context, s *session, ids []string, fn func(ctx context.Context) ([]string, error)) error {
	rec := new(audit)
	created, err := fn(context.WithValue(ctx, auditKey{}, rec))
	call := Call{
		Service:     rec.action.service,
		Action:      rec.action.op,
		Account:     s.account,
		Region:      s.region,
		ResourceIDs: append(slices.Clip(ids), created...),
		RequestID:   rec.requestID,
		Err:         err,
	}
	m.log.Info("aws call", "action", rec.action.name(), "account", s.account, "region", s.region, "resources", call.ResourceIDs, "request_id", call.RequestID, "err", err)
	if rerr := m.cfg.Recorder(ctx, call); rerr != nil {
		if err != nil {
			return fmt.Errorf("record %s: %w (after the call failed: %w)", rec.action.name(), rerr, err)
		}
		return fmt.Errorf("record %s: %w", rec.action.name(), rerr)
	}
	return err
}
