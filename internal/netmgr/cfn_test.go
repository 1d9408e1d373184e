package netmgr

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/testenv"
)

// The CloudFormation templates an operator installs are written in JSON
// (which is YAML too) so that these tests can parse them with
// encoding/json: go.mod has no YAML library.
var (
	templateDir = filepath.Join("..", "..", "deploy", "aws")
	rolePath    = filepath.Join(templateDir, "tether-network-role.yaml")
)

// stringOrList accepts the IAM policy forms "x" and ["x", "y"].
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(s))
}

// statement is one IAM policy statement. Resource and Principal may hold
// CloudFormation intrinsic functions, so they stay raw.
type statement struct {
	Sid       string
	Effect    string
	Action    stringOrList
	Resource  any
	Principal any
	Condition map[string]map[string]any
}

type policyDocument struct{ Statement []statement }

type template struct {
	Parameters map[string]struct {
		Type           string
		AllowedPattern string
		NoEcho         bool
	}
	Resources map[string]struct {
		Type       string
		Properties struct {
			AssumeRolePolicyDocument *policyDocument
			PolicyDocument           *policyDocument // AWS::IAM::Policy, ManagedPolicy
			Policies                 []struct{ PolicyDocument policyDocument }
		}
	}
}

func readTemplate(t *testing.T, path string) template {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tpl template
	if err := json.Unmarshal(b, &tpl); err != nil {
		t.Fatalf("parse %s as JSON (the template must stay JSON-compatible YAML): %v", path, err)
	}
	return tpl
}

// templates returns every CloudFormation template in deploy/aws.
func templates(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(templateDir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no templates in %s: %v", templateDir, err)
	}
	return paths
}

func TestRoleTemplateGrantsExactlyActions(t *testing.T) {
	tpl := readTemplate(t, rolePath)
	var granted []string
	roles := 0
	for name, r := range tpl.Resources {
		if r.Type != "AWS::IAM::Role" {
			continue
		}
		roles++
		externalID := false
		for _, s := range r.Properties.AssumeRolePolicyDocument.Statement {
			if slices.Contains(s.Action, "sts:AssumeRole") && s.Condition["StringEquals"]["sts:ExternalId"] != nil {
				externalID = true
			}
		}
		if !externalID {
			t.Errorf("role %s trust policy allows sts:AssumeRole without a StringEquals sts:ExternalId condition", name)
		}
		if p := tpl.Parameters["ExternalId"]; !p.NoEcho {
			t.Errorf("parameter ExternalId is not NoEcho: CloudFormation would show the secret")
		}
		for _, p := range r.Properties.Policies {
			for _, s := range p.PolicyDocument.Statement {
				if s.Effect != "Allow" {
					t.Errorf("role %s has a %q statement, want Allow only", name, s.Effect)
				}
				granted = append(granted, s.Action...)
			}
		}
	}
	if roles != 1 {
		t.Fatalf("%s has %d roles, want 1", rolePath, roles)
	}
	sort.Strings(granted)
	granted = slices.Compact(granted)
	if want := Actions(); !slices.Equal(granted, want) {
		for _, a := range want {
			if !slices.Contains(granted, a) {
				t.Errorf("template does not grant %s, which netmgr calls", a)
			}
		}
		for _, a := range granted {
			if !slices.Contains(want, a) {
				t.Errorf("template grants %s, which netmgr does not call", a)
			}
		}
	}
}

// mutatingVerb matches the IAM actions that change something.
var mutatingVerb = regexp.MustCompile(`^[a-z0-9-]+:(Create|Delete|Replace|Authorize|Revoke|Accept|Change|Associate|Disassociate|Modify|Put|Update|Attach|Detach|Reject|Set)`)

// leastPrivilege returns each way tpl grants more than it should: a
// wildcard action; a changing action on every resource ("*") without a
// condition, or an EC2 one without a condition at all; a trust policy that accepts an account root, a bare account
// or anyone, or a parameter that lets the installer name one.
func leastPrivilege(tpl template) []string {
	var problems []string
	for name, r := range tpl.Resources {
		var docs []policyDocument
		if d := r.Properties.PolicyDocument; d != nil {
			docs = append(docs, *d)
		}
		for _, p := range r.Properties.Policies {
			docs = append(docs, p.PolicyDocument)
		}
		for _, d := range docs {
			for _, s := range d.Statement {
				for _, a := range s.Action {
					if strings.Contains(a, "*") {
						problems = append(problems, fmt.Sprintf("%s statement %q grants the wildcard action %s", name, s.Sid, a))
					}
					switch {
					case !mutatingVerb.MatchString(a) || len(s.Condition) > 0:
					case isStar(s.Resource):
						problems = append(problems, fmt.Sprintf("%s statement %q grants %s on every resource (\"*\") without a condition", name, s.Sid, a))
					case strings.HasPrefix(a, "ec2:"):
						// EC2 resources carry ec2:Vpc, ec2:VpcID, the peering's
						// VPCs or tags: every change can be scoped by one.
						problems = append(problems, fmt.Sprintf("%s statement %q grants %s on every resource of its type without a condition (such as ec2:Vpc or a tether tag)", name, s.Sid, a))
					}
				}
			}
		}
		if d := r.Properties.AssumeRolePolicyDocument; d != nil {
			for _, s := range d.Statement {
				for _, p := range principals(s.Principal) {
					if why := rootPrincipal(tpl, p); why != "" {
						problems = append(problems, fmt.Sprintf("%s trust statement %q: %s", name, s.Sid, why))
					}
				}
			}
		}
	}
	sort.Strings(problems)
	return problems
}

func isStar(resource any) bool {
	switch r := resource.(type) {
	case string:
		return r == "*"
	case []any:
		return slices.ContainsFunc(r, isStar)
	}
	return false
}

// principals lists the values of a trust statement's Principal: "*", or
// each entry of its AWS, Service and Federated keys.
func principals(p any) []any {
	switch p := p.(type) {
	case string:
		return []any{p}
	case map[string]any:
		var out []any
		for _, v := range p {
			if l, ok := v.([]any); ok {
				out = append(out, l...)
			} else {
				out = append(out, v)
			}
		}
		return out
	}
	return []any{p}
}

// rootPrincipal says why a trust principal accepts a whole account (or
// anyone), or returns "".
func rootPrincipal(tpl template, p any) string {
	const root, bare = "arn:aws:iam::123456789012:root", "123456789012"
	switch p := p.(type) {
	case string:
		if p == "*" || strings.HasSuffix(p, ":root") || regexp.MustCompile(`^[0-9]{12}$`).MatchString(p) {
			return fmt.Sprintf("principal %q is a whole account, not a role", p)
		}
		return ""
	case map[string]any:
		if ref, ok := p["Ref"].(string); ok {
			param, ok := tpl.Parameters[ref]
			if !ok || param.AllowedPattern == "" {
				return fmt.Sprintf("principal parameter %s has no AllowedPattern, so it may name an account root", ref)
			}
			re, err := regexp.Compile(param.AllowedPattern)
			if err != nil {
				return fmt.Sprintf("principal parameter %s: AllowedPattern %q: %v", ref, param.AllowedPattern, err)
			}
			for _, v := range []string{root, bare, "arn:aws:iam::123456789012:user/u"} {
				if re.MatchString(v) {
					return fmt.Sprintf("principal parameter %s accepts %s, not only a role", ref, v)
				}
			}
			if !re.MatchString("arn:aws:iam::123456789012:role/tether-broker") {
				return fmt.Sprintf("principal parameter %s does not accept a role ARN", ref)
			}
			return ""
		}
		if sub, ok := p["Fn::Sub"].(string); ok && strings.HasSuffix(sub, ":root") {
			return fmt.Sprintf("principal %q is a whole account, not a role", sub)
		}
	}
	return fmt.Sprintf("principal %v: cannot tell whether it is a role", p)
}

// TestTemplatesLeastPrivilege parses every template in deploy/aws and
// fails on a changing action granted on "*" without a condition and on a
// trust policy that accepts a whole account; it also checks the checker
// against the faults the network role once had.
func TestTemplatesLeastPrivilege(t *testing.T) {
	for _, path := range templates(t) {
		for _, p := range leastPrivilege(readTemplate(t, path)) {
			t.Errorf("%s: %s", path, p)
		}
	}

	bad := `{
		"Parameters": {"TrustedPrincipalArn": {"Type": "String", "AllowedPattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:(root|role/.+|user/.+)$"}},
		"Resources": {
			"Role": {"Type": "AWS::IAM::Role", "Properties": {
				"AssumeRolePolicyDocument": {"Statement": [
					{"Sid": "param", "Effect": "Allow", "Principal": {"AWS": {"Ref": "TrustedPrincipalArn"}}, "Action": "sts:AssumeRole"},
					{"Sid": "sub", "Effect": "Allow", "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}, "Action": "sts:AssumeRole"},
					{"Sid": "literal", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::123456789012:role/ok", "111111111111"]}, "Action": "sts:AssumeRole"}
				]},
				"Policies": [{"PolicyDocument": {"Statement": [
					{"Sid": "zones", "Effect": "Allow", "Action": "route53:CreateHostedZone", "Resource": "*"},
					{"Sid": "routes", "Effect": "Allow", "Action": ["ec2:DescribeVpcs", "ec2:ReplaceRoute"], "Resource": ["*"]},
					{"Sid": "scoped", "Effect": "Allow", "Action": "ec2:DeleteRoute", "Resource": "*", "Condition": {"ArnLike": {"ec2:Vpc": "arn:*:ec2:*:*:vpc/vpc-1"}}},
					{"Sid": "all", "Effect": "Allow", "Action": "ec2:*", "Resource": "arn:aws:ec2:*:*:route-table/*"},
					{"Sid": "tables", "Effect": "Allow", "Action": "ec2:CreateRoute", "Resource": "arn:aws:ec2:*:*:route-table/*"},
					{"Sid": "zones2", "Effect": "Allow", "Action": "route53:DeleteHostedZone", "Resource": "arn:aws:route53:::hostedzone/*"}
				]}}]
			}}
		}
	}`
	var tpl template
	if err := json.Unmarshal([]byte(bad), &tpl); err != nil {
		t.Fatal(err)
	}
	got := leastPrivilege(tpl)
	for _, want := range []string{
		`statement "zones" grants route53:CreateHostedZone on every resource`,
		`statement "routes" grants ec2:ReplaceRoute on every resource`,
		`statement "all" grants the wildcard action ec2:*`,
		`statement "tables" grants ec2:CreateRoute on every resource of its type without a condition`,
		`trust statement "param": principal parameter TrustedPrincipalArn accepts arn:aws:iam::123456789012:root`,
		`trust statement "sub": principal "arn:${AWS::Partition}:iam::${AWS::AccountId}:root" is a whole account`,
		`trust statement "literal": principal "111111111111" is a whole account`,
	} {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, want) }) {
			t.Errorf("leastPrivilege(bad template) = %q, want a problem containing %q", got, want)
		}
	}
	// The scoped DeleteRoute, DescribeVpcs and DeleteHostedZone on zone
	// ARNs (Route 53 has no condition to scope it by) pass.
	if len(got) != 7 {
		t.Errorf("leastPrivilege(bad template) found %d problems, want 7: %q", len(got), got)
	}
}

// TestRoleTemplateSessionIdentity: the role lets the broker name the
// engineer (sts:SetSourceIdentity) and the request (the session name
// netmgr sets) for CloudTrail, and the broker's own actions include both.
func TestRoleTemplateSessionIdentity(t *testing.T) {
	tpl := readTemplate(t, rolePath)
	for name, r := range tpl.Resources {
		if r.Type != "AWS::IAM::Role" {
			continue
		}
		var assume, source []statement
		for _, s := range r.Properties.AssumeRolePolicyDocument.Statement {
			if s.Effect != "Allow" {
				continue
			}
			if slices.Contains(s.Action, "sts:AssumeRole") {
				assume = append(assume, s)
			}
			if slices.Contains(s.Action, "sts:SetSourceIdentity") {
				source = append(source, s)
			}
		}
		if len(assume) == 0 || len(source) == 0 {
			t.Fatalf("role %s trust policy: %d statement(s) allow sts:AssumeRole and %d sts:SetSourceIdentity, want both", name, len(assume), len(source))
		}
		for _, s := range source {
			if !slices.ContainsFunc(assume, func(a statement) bool { return samePrincipal(a.Principal, s.Principal) }) {
				t.Errorf("role %s: sts:SetSourceIdentity is allowed to %v, who may not assume the role", name, s.Principal)
			}
		}
		for _, s := range assume {
			pattern, ok := s.Condition["StringLike"]["sts:RoleSessionName"].(string)
			if !ok {
				continue
			}
			re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, ".*") + "$")
			for _, req := range []string{"", "6f1c2a9e-0d4b-4c56-8a8e-2b1f3c4d5e6f"} {
				if n := SessionName(req); !re.MatchString(n) {
					t.Errorf("role %s: session name %q (request %q) does not match the trust policy's sts:RoleSessionName %q", name, n, req, pattern)
				}
			}
		}
	}
	if got := BrokerActions(); !slices.Equal(got, []string{"sts:AssumeRole", "sts:SetSourceIdentity"}) {
		t.Errorf("BrokerActions() = %q, want sts:AssumeRole and sts:SetSourceIdentity", got)
	}
}

func samePrincipal(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestTemplatesLint runs cfn-lint on every template. It skips where
// cfn-lint is missing and fails under CI=true; scripts/install-deps.sh
// installs it with pip when it can.
func TestTemplatesLint(t *testing.T) {
	lint, err := exec.LookPath("cfn-lint")
	testenv.Require(t, err == nil, "cfn-lint is not on PATH: pip install cfn-lint (make deps tries)")
	for _, path := range templates(t) {
		if out, err := exec.Command(lint, path).CombinedOutput(); err != nil {
			t.Errorf("cfn-lint %s: %v\n%s", path, err, out)
		}
	}
}
