// Package s3export uploads audit export files to Amazon S3, where a
// security team keeps them for the long term. When the destination bucket
// has S3 Object Lock enabled, each upload carries a retention period
// (the bucket's default rule, or a configured one), so that nobody, Tether
// included, can delete or overwrite the exported version before it expires.
//
// Destinations are written as s3://bucket/prefix and parsed by [ParseURL];
// an [Uploader] sends one file per [Uploader.Upload] call.
package s3export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// ContentType is the media type uploads are stored with: audit exports are
// newline-delimited JSON.
const ContentType = "application/x-ndjson"

// Errors that [Uploader.Upload] wraps, for callers that branch on the cause.
// The wrapping error says what to do about it.
var (
	// ErrNoSuchBucket means the bucket does not exist, as seen from the
	// configured account and endpoint.
	ErrNoSuchBucket = errors.New("bucket does not exist")
	// ErrAccessDenied means the credentials lack a permission the upload needs.
	ErrAccessDenied = errors.New("access denied")
	// ErrWrongRegion means the bucket lives in another region than the one
	// configured.
	ErrWrongRegion = errors.New("bucket is in another region")
	// ErrCredentialsRejected means S3 did not accept the credentials: unknown
	// access key, wrong secret, or an expired session.
	ErrCredentialsRejected = errors.New("AWS credentials rejected")
)

// Options configures an [Uploader]. The zero value uploads to AWS in the
// region and with the credentials that the AWS SDK finds in the environment
// and shared configuration files.
type Options struct {
	// Region is the AWS region of the bucket. Empty means the SDK's default
	// (AWS_REGION, then the shared config profile).
	Region string
	// Endpoint, if set, replaces the S3 endpoint, e.g. "http://127.0.0.1:5000"
	// for moto_server or an S3-compatible store. It must be an absolute http
	// or https URL.
	Endpoint string
	// UsePathStyle addresses buckets as ENDPOINT/bucket rather than
	// bucket.ENDPOINT, as most S3 emulators need.
	UsePathStyle bool
	// Retention is applied, in GOVERNANCE mode, to uploads into a bucket that
	// has Object Lock enabled but no default retention rule. Zero sets no
	// retention on such uploads. Buckets with a default rule get that rule's
	// mode and period instead.
	Retention time.Duration
}

// Validate reports whether o can be used, and if not, why.
func (o Options) Validate() error {
	if o.Retention < 0 {
		return fmt.Errorf("retention %v is negative; use 0 to set no retention", o.Retention)
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("S3 endpoint %q is not an absolute http:// or https:// URL", o.Endpoint)
		}
	}
	return nil
}

// s3API is the part of the S3 client that an Uploader uses.
type s3API interface {
	GetObjectLockConfiguration(context.Context, *s3.GetObjectLockConfigurationInput, ...func(*s3.Options)) (*s3.GetObjectLockConfigurationOutput, error)
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

var _ s3API = (*s3.Client)(nil)

// Uploader uploads export files to S3. It is safe for concurrent use.
type Uploader struct {
	s3        s3API
	region    string
	retention time.Duration
	now       func() time.Time // the clock retention periods start from
}

// New returns an Uploader configured by opts. It loads the AWS SDK's default
// configuration (environment, shared config and credentials files, SSO,
// instance roles) and fails early if that yields no region or no
// credentials. Requests are retried by the SDK's standard retryer.
func New(ctx context.Context, opts Options) (*Uploader, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("s3export options: %w", err)
	}
	var load []func(*config.LoadOptions) error
	if opts.Region != "" {
		load = append(load, config.WithRegion(opts.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("no AWS region: set the export region, or AWS_REGION, or region in the AWS config profile")
	}
	if cfg.Credentials == nil {
		return nil, errors.New("no AWS credentials provider configured")
	}
	// Resolve credentials now, so that a missing key shows at start-up
	// rather than at the first export. The SDK caches them.
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, fmt.Errorf("no usable AWS credentials (looked in the environment, the shared config and credentials files, SSO and the instance role): %w", err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.UsePathStyle
	})
	return &Uploader{s3: client, region: cfg.Region, retention: opts.Retention, now: time.Now}, nil
}

// Result describes an uploaded object.
type Result struct {
	Bucket string
	Key    string
	// VersionID is the object's version; empty if the bucket is not versioned.
	// Object Lock protects this version, not the key.
	VersionID string
	// ETag is the entity tag S3 returned, quotes included.
	ETag string
	// ChecksumSHA256 is the base64 SHA-256 of the body that S3 verified and
	// stored with the object.
	ChecksumSHA256 string
	// LockMode is "GOVERNANCE" or "COMPLIANCE" if the upload set a
	// retention period, else empty.
	LockMode string
	// RetainUntil is when the retention period ends; zero if LockMode is empty.
	RetainUntil time.Time
}

// Upload stores size bytes read from body, from its current offset, as
// bucket/key. If the bucket has Object Lock enabled, the object gets a
// retention period: the mode and period of the bucket's default rule if it
// has one, else [Options.Retention] in GOVERNANCE mode, counted from now.
//
// Besides s3:PutObject, Upload needs s3:GetBucketObjectLockConfiguration on
// the bucket, and s3:PutObjectRetention when it sets a retention period.
// Errors caused by a missing bucket, a missing permission, the wrong region
// or rejected credentials wrap [ErrNoSuchBucket], [ErrAccessDenied],
// [ErrWrongRegion] or [ErrCredentialsRejected].
func (u *Uploader) Upload(ctx context.Context, bucket, key string, body io.ReadSeeker, size int64) (Result, error) {
	if err := checkBucket(bucket); err != nil {
		return Result{}, fmt.Errorf("upload to S3: %w", err)
	}
	if err := checkKey(key); err != nil {
		return Result{}, fmt.Errorf("upload to S3 bucket %q: %w", bucket, err)
	}
	if body == nil || size < 0 {
		return Result{}, fmt.Errorf("upload s3://%s/%s: no body, or negative size %d", bucket, key, size)
	}

	mode, until, err := u.retentionFor(ctx, bucket)
	if err != nil {
		return Result{}, err
	}

	in := &s3.PutObjectInput{
		Bucket:            aws.String(bucket),
		Key:               aws.String(key),
		Body:              body,
		ContentLength:     aws.Int64(size),
		ContentType:       aws.String(ContentType),
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
	}
	if mode != "" {
		in.ObjectLockMode = mode
		in.ObjectLockRetainUntilDate = aws.Time(until)
	}
	out, err := u.s3.PutObject(ctx, in)
	if err != nil {
		perm := "s3:PutObject on arn:aws:s3:::" + bucket + "/" + key
		if mode != "" {
			perm += ", and s3:PutObjectRetention as it sets a retention period"
		}
		return Result{}, u.explain(fmt.Sprintf("upload s3://%s/%s", bucket, key), bucket, perm, err)
	}
	r := Result{
		Bucket:         bucket,
		Key:            key,
		VersionID:      aws.ToString(out.VersionId),
		ETag:           aws.ToString(out.ETag),
		ChecksumSHA256: aws.ToString(out.ChecksumSHA256),
	}
	if mode != "" {
		r.LockMode, r.RetainUntil = string(mode), until
	}
	return r, nil
}

// retentionFor returns the Object Lock mode and retain-until date for a new
// object in bucket, or an empty mode if it should get none.
func (u *Uploader) retentionFor(ctx context.Context, bucket string) (types.ObjectLockMode, time.Time, error) {
	out, err := u.s3.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(bucket)})
	if err != nil {
		// S3 answers this way for buckets created without Object Lock.
		if code := errorCode(err); code == "ObjectLockConfigurationNotFoundError" || code == "NoSuchObjectLockConfiguration" {
			return "", time.Time{}, nil
		}
		return "", time.Time{}, u.explain(fmt.Sprintf("read Object Lock configuration of bucket %q", bucket), bucket,
			"s3:GetBucketObjectLockConfiguration on arn:aws:s3:::"+bucket, err)
	}
	c := out.ObjectLockConfiguration
	if c == nil || c.ObjectLockEnabled != types.ObjectLockEnabledEnabled {
		return "", time.Time{}, nil
	}
	now := u.now().UTC()
	// A rule has Days or Years, not both; S3 emulators may send the other as 0.
	if c.Rule != nil && c.Rule.DefaultRetention != nil && c.Rule.DefaultRetention.Mode != "" {
		d := c.Rule.DefaultRetention
		days, years := int(aws.ToInt32(d.Days)), int(aws.ToInt32(d.Years))
		if days > 0 || years > 0 {
			return types.ObjectLockMode(d.Mode), ceilSecond(now.AddDate(years, 0, days)), nil
		}
	}
	if u.retention > 0 {
		return types.ObjectLockModeGovernance, ceilSecond(now.Add(u.retention)), nil
	}
	return "", time.Time{}, nil
}

// ceilSecond rounds t up to a whole second: S3 keeps retain-until dates to
// the second, and rounding down would shorten the period.
func ceilSecond(t time.Time) time.Time {
	if s := t.Truncate(time.Second); s.Before(t) {
		return s.Add(time.Second)
	}
	return t
}

func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty object key")
	case len(key) > maxKeyLen:
		return fmt.Errorf("object key is %d bytes; S3 allows at most %d", len(key), maxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("object key %q is not valid UTF-8", key)
	}
	return nil
}

// errorCode returns the S3 error code in err, or "".
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// explain wraps err, from the S3 call described by action, with what a
// person can do about it. perm names the permission the call needs. S3's
// error messages do not repeat credentials, and neither does this.
func (u *Uploader) explain(action, bucket, perm string, err error) error {
	code := errorCode(err)
	status, bucketRegion := 0, ""
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil && re.Response.Response != nil {
		status = re.HTTPStatusCode()
		bucketRegion = re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	switch {
	case code == "NoSuchBucket":
		return fmt.Errorf("%s: %w; check the bucket name in the export URL and that the credentials belong to the bucket's account, or create the bucket (with Object Lock, for tamper-resistant retention): %w",
			action, ErrNoSuchBucket, err)
	case code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" || code == "IncorrectEndpoint" || status == 301 ||
		bucketRegion != "" && bucketRegion != u.region:
		hint := fmt.Sprintf("set the export region to the bucket's region (aws s3api get-bucket-location --bucket %s)", bucket)
		if bucketRegion != "" && bucketRegion != u.region {
			hint = fmt.Sprintf("the bucket is in %s; set the export region to %s", bucketRegion, bucketRegion)
		}
		return fmt.Errorf("%s: %w: requests go to region %s; %s: %w", action, ErrWrongRegion, u.region, hint, err)
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "ExpiredToken" ||
		code == "InvalidToken" || code == "TokenRefreshRequired":
		return fmt.Errorf("%s: %w (%s): check the access key and secret, or refresh the session (aws sso login, or new temporary credentials): %w",
			action, ErrCredentialsRejected, code, err)
	case code == "AccessDenied" || code == "AllAccessDisabled" || status == 403:
		return fmt.Errorf("%s: %w: the AWS identity needs %s, and the bucket policy must allow it: %w",
			action, ErrAccessDenied, perm, err)
	}
	return fmt.Errorf("%s: %w", action, err)
}
