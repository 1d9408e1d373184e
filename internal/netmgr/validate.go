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
	regionRE   = regexp.MustCompile(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$`)
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

// partition returns the AWS partition of a region.
func partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	case strings.HasPrefix(region, "us-isob-"):
		return "aws-iso-b"
	case strings.HasPrefix(region, "us-isof-"):
		return "aws-iso-f"
	case strings.HasPrefix(region, "us-iso-"):
		return "aws-iso"
	case strings.HasPrefix(region, "eu-isoe-"):
		return "aws-iso-e"
	case strings.HasPrefix(region, "eusc-"):
		return "aws-eusc"
	}
	return "aws"
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrInvalid)...)
}

// validateSide checks what Target and Peer have in common.
func validateSide(what, account, region, vpc, role, externalID string, rtbs []string) error {
	var errs []error
	if !accountRE.MatchString(account) {
		errs = append(errs, invalid("%s account ID %q: want 12 digits", what, account))
	}
	if !regionRE.MatchString(region) {
		errs = append(errs, invalid("%s region %q: want a region name such as us-east-1", what, region))
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
		case regionRE.MatchString(region) && m[1] != partition(region):
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
	if regionRE.MatchString(t.Region) && regionRE.MatchString(p.Region) && partition(t.Region) != partition(p.Region) {
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
