package netmgr

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

var (
	accountRE  = regexp.MustCompile(`^[0-9]{12}$`)
	roleARNRE  = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-[a-z]|aws-eusc):iam::([0-9]{12}):role/[\w+=,.@/-]{1,512}$`)
	externalRE = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
	labelRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	tagValueRE = regexp.MustCompile(`^[\w.:/=+@-]{1,128}$`)
)

// idRE returns the pattern of an EC2 resource ID with the given prefix:
// 8 or 17 lowercase hex digits.
func idRE(prefix string) *regexp.Regexp {
	return regexp.MustCompile(`^` + prefix + `-([0-9a-f]{8}|[0-9a-f]{17})$`)
}

var (
	vpcRE = idRE("vpc")
	rtbRE = idRE("rtb")
)

// knownRegions maps every region the AWS SDK knows (aws-sdk-go-v2's
// partitions.json, internal/endpoints/awsrulesfn) to its partition. A
// region not listed is refused before any call: a made-up name would
// otherwise be retried as a DNS failure. TestKnownRegionsMatchSDK keeps
// the table equal to the SDK's in go.mod; update it with the SDK.
var knownRegions = map[string]string{
	"af-south-1": "aws", "ap-east-1": "aws", "ap-east-2": "aws", "ap-northeast-1": "aws", "ap-northeast-2": "aws",
	"ap-northeast-3": "aws", "ap-south-1": "aws", "ap-south-2": "aws", "ap-southeast-1": "aws", "ap-southeast-2": "aws",
	"ap-southeast-3": "aws", "ap-southeast-4": "aws", "ap-southeast-5": "aws", "ap-southeast-6": "aws", "ap-southeast-7": "aws",
	"ca-central-1": "aws", "ca-west-1": "aws", "eu-central-1": "aws", "eu-central-2": "aws", "eu-north-1": "aws",
	"eu-south-1": "aws", "eu-south-2": "aws", "eu-west-1": "aws", "eu-west-2": "aws", "eu-west-3": "aws",
	"il-central-1": "aws", "me-central-1": "aws", "me-south-1": "aws", "me-west-1": "aws", "mx-central-1": "aws",
	"sa-east-1": "aws", "sa-west-1": "aws", "us-east-1": "aws", "us-east-2": "aws", "us-west-1": "aws", "us-west-2": "aws",
	"cn-north-1": "aws-cn", "cn-northwest-1": "aws-cn",
	"eusc-de-east-1": "aws-eusc",
	"us-iso-east-1":  "aws-iso", "us-iso-west-1": "aws-iso",
	"us-isob-east-1": "aws-iso-b", "us-isob-west-1": "aws-iso-b",
	"eu-isoe-west-1": "aws-iso-e",
	"us-isof-east-1": "aws-iso-f", "us-isof-south-1": "aws-iso-f",
	"us-gov-east-1": "aws-us-gov", "us-gov-west-1": "aws-us-gov",
}

// knownRegion reports whether the SDK knows the region.
func knownRegion(region string) bool {
	_, ok := knownRegions[region]
	return ok
}

// partition returns the AWS partition of a known region, "" for others.
func partition(region string) string { return knownRegions[region] }

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrInvalid)...)
}

// validateSide checks what Target and Peer have in common.
func validateSide(what, account, region, vpc, role, externalID string, rtbs []string) error {
	var errs []error
	if !accountRE.MatchString(account) {
		errs = append(errs, invalid("%s account ID %q: want 12 digits", what, account))
	}
	if !knownRegion(region) {
		errs = append(errs, invalid("%s region %q: not a region the AWS SDK knows in any partition; want a region name such as us-east-1", what, region))
	}
	if !vpcRE.MatchString(vpc) {
		errs = append(errs, invalid("%s VPC ID %q: want vpc- and 8 or 17 lowercase hex digits", what, vpc))
	}
	for _, id := range rtbs {
		if !rtbRE.MatchString(id) {
			errs = append(errs, invalid("%s route table ID %q: want rtb- and 8 or 17 lowercase hex digits", what, id))
		}
	}
	if role != "" {
		m := roleARNRE.FindStringSubmatch(role)
		switch {
		case m == nil:
			errs = append(errs, invalid("%s role ARN %q: want arn:<partition>:iam::<account>:role/<name>", what, role))
		case m[2] != account:
			errs = append(errs, invalid("%s role ARN %q is in account %s, not the %s account %s", what, role, m[2], what, account))
		case knownRegion(region) && m[1] != partition(region):
			errs = append(errs, fmt.Errorf("%s role ARN %q is in partition %s but region %s is in %s: %w", what, role, m[1], region, partition(region), ErrPartition))
		}
		if len(externalID) < 2 || len(externalID) > 1224 || !externalRE.MatchString(externalID) {
			errs = append(errs, invalid("%s external ID: want 2 to 1224 characters of letters, digits and +=,.@:/-", what))
		}
	}
	return errors.Join(errs...)
}

// ValidateTarget checks t's fields without calling AWS. Defaults are not
// applied: empty optional fields are valid.
func ValidateTarget(t Target) error {
	errs := []error{validateSide("BYOC", t.AccountID, t.Region, t.VPCID, t.RoleARN, t.ExternalID, t.RouteTableIDs)}
	for _, p := range t.ServicePorts {
		if p < 1 || p > 65535 {
			errs = append(errs, invalid("BYOC service port %d: want 1 to 65535", p))
		}
	}
	for k := range t.LBTags {
		if k == "" {
			errs = append(errs, invalid("BYOC load balancer tag with an empty key: want non-empty keys"))
		}
	}
	if t.PrivateHostname != "" {
		if err := validateHostname(t.PrivateHostname); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ValidatePeer checks p's fields without calling AWS.
func ValidatePeer(p Peer) error {
	return validateSide("peer", p.AccountID, p.Region, p.VPCID, p.RoleARN, p.ExternalID, p.RouteTableIDs)
}

func validateHostname(h string) error {
	labels := strings.Split(strings.TrimSuffix(h, "."), ".")
	if len(h) > 253 || len(labels) < 3 {
		return invalid("private hostname %q: want a DNS name of at least three labels, such as abc123-private.us-east-1.aws.example.com", h)
	}
	for _, l := range labels {
		if !labelRE.MatchString(l) {
			return invalid("private hostname %q: label %q is not lowercase letters, digits and inner hyphens, 1 to 63 long", h, l)
		}
	}
	return nil
}

// validatePair checks what involves both sides: the partition, and the
// tags.
func validatePair(t Target, p Peer, tags *Tags) error {
	errs := []error{ValidateTarget(t), ValidatePeer(p)}
	if tags != nil && !tagValueRE.MatchString(tags.Deployment) {
		errs = append(errs, invalid("deployment tag %q: want 1 to 128 letters, digits and _.:/=+@-", tags.Deployment))
	}
	if tags != nil && tags.Request != "" && !tagValueRE.MatchString(tags.Request) {
		errs = append(errs, invalid("request tag %q: want 1 to 128 letters, digits and _.:/=+@-", tags.Request))
	}
	if knownRegion(t.Region) && knownRegion(p.Region) && partition(t.Region) != partition(p.Region) {
		errs = append(errs, fmt.Errorf("peer region %s is in partition %s but the BYOC region %s is in %s; peering works only within a partition: %w", p.Region, partition(p.Region), t.Region, partition(t.Region), ErrPartition))
	}
	if t.VPCID != "" && t.VPCID == p.VPCID && t.AccountID == p.AccountID {
		errs = append(errs, invalid("peer VPC %s is the BYOC VPC", p.VPCID))
	}
	return errors.Join(errs...)
}

// parseCIDRs parses the CIDR blocks AWS reports.
func parseCIDRs(what string, blocks []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, b := range blocks {
		p, err := netip.ParsePrefix(b)
		if err != nil {
			return nil, invalid("%s CIDR %q from AWS: %v", what, b, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// checkSize applies the vendor's sizing rule to the BYOC VPC's primary
// CIDR: smaller than /23 is an error, /23 works but is tight.
func checkSize(vpc string, cidr netip.Prefix) (warning string, err error) {
	switch bits := cidr.Bits(); {
	case bits > 23:
		return "", fmt.Errorf("BYOC VPC %s CIDR %s is smaller than /23, the smallest that works; recreate the deployment with a /22 or larger: %w", vpc, cidr, ErrCIDRTooSmall)
	case bits == 23:
		return fmt.Sprintf("BYOC VPC %s CIDR %s is a /23, the smallest that works; a /22 or larger is recommended", vpc, cidr), nil
	}
	return "", nil
}

// overlap returns the first pair of overlapping prefixes.
func overlap(a, b []netip.Prefix) (netip.Prefix, netip.Prefix, bool) {
	for _, x := range a {
		for _, y := range b {
			if x.Overlaps(y) {
				return x, y, true
			}
		}
	}
	return netip.Prefix{}, netip.Prefix{}, false
}

// awsDomains are DNS names AWS owns. Tether never makes a private zone
// at or under one: in the peer VPC it would capture an AWS endpoint (STS,
// S3, ...) and send it to the vendor's load balancer.
var awsDomains = []string{"amazonaws.com", "amazonaws.com.cn", "amazonaws-us-gov.com", "amazonaws.eu", "api.aws", "aws", "aws.dev", "amazon.com", "c2s.ic.gov", "sc2s.sgov.gov"}

// under reports whether name is domain or a name under it.
func under(name, domain string) bool {
	return name == domain || strings.HasSuffix(name, "."+domain)
}

func normName(s string) string { return strings.TrimSuffix(strings.ToLower(s), ".") }

// ValidatePrivateDomain checks the vendor's private domain, under which
// every private hostname must be: a DNS name of at least two labels that
// is no AWS domain and under none.
func ValidatePrivateDomain(domain string) error {
	d := normName(domain)
	labels := strings.Split(d, ".")
	if len(d) > 200 || len(labels) < 2 {
		return invalid("private domain %q: want the vendor's own DNS domain of at least two labels, such as aws.clickhouse.example", domain)
	}
	for _, l := range labels {
		if !labelRE.MatchString(l) {
			return invalid("private domain %q: label %q is not lowercase letters, digits and inner hyphens, 1 to 63 long", domain, l)
		}
	}
	for _, a := range awsDomains {
		if under(d, a) || under(a, d) {
			return invalid("private domain %q is, contains or is under AWS's %s: private zones there would capture AWS endpoints in the peer VPC; want the vendor's own domain", domain, a)
		}
	}
	return nil
}

// ValidatePrivateHostname checks that a private hostname may get a
// private hosted zone in a customer's VPC: a DNS name strictly under the
// vendor's private domain (see [ValidatePrivateDomain]). An empty domain
// refuses every name.
func ValidatePrivateHostname(host, domain string) error {
	if domain == "" {
		return invalid("private hostname %q: this broker has no private domain configured (network.private_domain), so it makes no private hosted zones", host)
	}
	if err := ValidatePrivateDomain(domain); err != nil {
		return err
	}
	if err := validateHostname(host); err != nil {
		return err
	}
	h, d := normName(host), normName(domain)
	for _, a := range awsDomains {
		if under(h, a) {
			return invalid("private hostname %q is under AWS's %s: a private zone for it would capture an AWS endpoint in the peer VPC", host, a)
		}
	}
	if h == d || !under(h, d) {
		return invalid("private hostname %q is not under the vendor's private domain %s: want a name such as abc123-private.us-east-1.%s", host, d, d)
	}
	return nil
}

// privateRanges are the address ranges a peer VPC may use without the
// customer registering them: RFC 1918 and the shared range of RFC 6598.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// IsPrivateCIDR reports whether p lies wholly in private address space
// (RFC 1918, or 100.64.0.0/10).
func IsPrivateCIDR(p netip.Prefix) bool {
	for _, r := range privateRanges {
		if p.Addr().Is4() && r.Contains(p.Masked().Addr()) && p.Bits() >= r.Bits() {
			return true
		}
	}
	return false
}
