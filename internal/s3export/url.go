package s3export

import (
	"fmt"
	"net/netip"
	"strings"
)

// maxKeyLen is S3's limit on the length of an object key, in bytes.
const maxKeyLen = 1024

// ParseURL splits an export destination of the form s3://bucket/prefix into
// the bucket name and the key prefix. The prefix may be empty (s3://bucket or
// s3://bucket/); it is returned without a trailing slash, so that callers
// build keys with [path.Join].
//
// ParseURL is strict, because a typo here sends a security team's audit
// trail to the wrong place: the scheme must be exactly "s3", the bucket name
// must follow S3's naming rules for general purpose buckets, and the prefix
// may hold only ASCII letters, digits, "/" and the characters ! - _ . * ' ( ) =
// (S3's "safe" key characters, plus "=" for key=value partitions), with no
// empty, "." or ".." path segments.
func ParseURL(s string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		if scheme, _, found := strings.Cut(s, "://"); found {
			return "", "", fmt.Errorf("parse S3 URL %q: scheme %q is not supported; want s3://BUCKET/PREFIX", s, scheme)
		}
		return "", "", fmt.Errorf("parse S3 URL %q: not an S3 URL; want s3://BUCKET/PREFIX", s)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("parse S3 URL %q: no bucket name; want s3://BUCKET/PREFIX", s)
	}
	if err := checkBucket(bucket); err != nil {
		return "", "", fmt.Errorf("parse S3 URL %q: %w", s, err)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if err := checkPrefix(prefix); err != nil {
		return "", "", fmt.Errorf("parse S3 URL %q: %w", s, err)
	}
	return bucket, prefix, nil
}

// checkBucket reports whether name follows S3's naming rules for general
// purpose buckets, and if not, which rule it breaks.
// https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
func checkBucket(name string) error {
	const chars = "bucket names use only lowercase letters, digits, dots (.) and hyphens (-)"
	if n := len(name); n < 3 || n > 63 {
		return fmt.Errorf("bucket name %q is %d characters long; bucket names are 3 to 63 characters", name, n)
	}
	for _, c := range name {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '.', c == '-':
		case 'A' <= c && c <= 'Z':
			return fmt.Errorf("bucket name %q has uppercase letters; %s", name, chars)
		default:
			return fmt.Errorf("bucket name %q contains %q; %s", name, c, chars)
		}
	}
	if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return fmt.Errorf("bucket name %q must begin and end with a lowercase letter or digit", name)
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("bucket name %q has two adjacent dots", name)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return fmt.Errorf("bucket name %q is an IP address; bucket names must not be", name)
	}
	for _, p := range []string{"xn--", "sthree-", "amzn-s3-demo-"} {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("bucket name %q starts with %q, which S3 reserves", name, p)
		}
	}
	for _, sfx := range []string{"-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"} {
		if strings.HasSuffix(name, sfx) {
			return fmt.Errorf("bucket name %q ends with %q, which S3 reserves (access point aliases, directory and table buckets are not supported)", name, sfx)
		}
	}
	return nil
}

func isAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// checkPrefix reports whether p, a prefix without its trailing slash, is one
// ParseURL accepts.
func checkPrefix(p string) error {
	if p == "" {
		return nil
	}
	if len(p) >= maxKeyLen {
		return fmt.Errorf("prefix is %d bytes; S3 keys, prefix included, are at most %d bytes", len(p), maxKeyLen)
	}
	for _, c := range p {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.ContainsRune("/!-_.*'()=", c):
		default:
			return fmt.Errorf("prefix %q contains %q; a prefix may hold only ASCII letters, digits, \"/\" and ! - _ . * ' ( ) =", p, c)
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("prefix %q has an empty, \".\" or \"..\" path segment; write it as a/b/c", p)
		}
	}
	return nil
}
