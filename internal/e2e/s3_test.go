package e2e

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/tetherhq/tether/internal/mototest"
)

// TestAuditExportS3: a reviewer exports the audit log to S3, as in the
// README, into a plain bucket and into one with Object Lock; what lands in
// the bucket verifies offline. A missing bucket is one clear line.
func TestAuditExportS3(t *testing.T) {
	b := startBroker(t)
	b.createDeployment(t, "acme", "prod")

	endpoint := mototest.Start(t)
	mototest.SetAWSEnv(t) // for the SDK client below
	cfg, err := config.LoadDefaultConfig(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
	})

	const plain, locked = "tether-e2e-plain", "tether-e2e-locked"
	if _, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(plain)}); err != nil {
		t.Fatalf("CreateBucket(%s): %v", plain, err)
	}
	if _, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(locked), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatalf("CreateBucket(%s): %v", locked, err)
	}
	_, err = c.PutObjectLockConfiguration(t.Context(), &s3.PutObjectLockConfigurationInput{
		Bucket: aws.String(locked),
		ObjectLockConfiguration: &types.ObjectLockConfiguration{
			ObjectLockEnabled: types.ObjectLockEnabledEnabled,
			Rule: &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{
				Mode: types.ObjectLockRetentionModeGovernance, Days: aws.Int32(1),
			}},
		},
	})
	if err != nil {
		t.Fatalf("PutObjectLockConfiguration(%s): %v", locked, err)
	}

	// The CLI gets its AWS settings from the environment, as a reviewer's
	// would; the secret is one it must never print (moto takes any).
	const secret = "e2e-secret-must-not-leak"
	env := append(mototest.AWSEnv(t), "AWS_SECRET_ACCESS_KEY="+secret, "TETHER_CONFIG="+b.cliJSON)
	export := func(url string) (string, string, int) {
		t.Helper()
		stdout, stderr, code := runBin(t, env, "broker", "audit", "export", "--s3", url, "--s3-endpoint", endpoint)
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("audit export --s3 %s printed the secret key: %s %s", url, stdout, stderr)
		}
		return stdout, stderr, code
	}

	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	if _, errOut, code := b.cli(t, "audit", "public-key", "--out", key); code != 0 {
		t.Fatalf("audit public-key: exit %d: %s", code, errOut)
	}

	const prefix = "some/prefix"
	for _, bucket := range []string{plain, locked} {
		t.Run(bucket, func(t *testing.T) {
			url := "s3://" + bucket + "/" + prefix
			out, errOut, code := export(url)
			if code != 0 {
				t.Fatalf("audit export --s3 %s: exit %d: %s", url, code, errOut)
			}
			t.Logf("audit export: %s", strings.TrimSpace(out))

			list, err := c.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix + "/")})
			if err != nil {
				t.Fatalf("ListObjectsV2(%s): %v", url, err)
			}
			if len(list.Contents) != 1 {
				t.Fatalf("%s holds %d objects after one export, want 1", url, len(list.Contents))
			}
			obj := aws.ToString(list.Contents[0].Key)
			if !strings.HasSuffix(obj, ".jsonl") {
				t.Errorf("export stored as %q, want a .jsonl key", obj)
			}
			if want := "s3://" + bucket + "/" + obj; !strings.Contains(out, want) {
				t.Errorf("audit export output = %q, want it to name %s", out, want)
			}
			if got := strings.Contains(out, "Object Lock"); got != (bucket == locked) {
				t.Errorf("audit export to %s: output = %q; mentions Object Lock: %v, want %v", bucket, out, got, bucket == locked)
			}

			got, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(obj)})
			if err != nil {
				t.Fatalf("GetObject(%s): %v", obj, err)
			}
			body, err := io.ReadAll(got.Body)
			got.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if bucket == locked {
				until := aws.ToTime(got.ObjectLockRetainUntilDate)
				if got.ObjectLockMode != types.ObjectLockModeGovernance || until.Before(time.Now().Add(23*time.Hour)) {
					t.Errorf("GetObject(%s) lock = %q until %v, want GOVERNANCE for the bucket's 1 day", obj, got.ObjectLockMode, until)
				}
			}
			file := filepath.Join(dir, bucket+".jsonl")
			if err := os.WriteFile(file, body, 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, code = runBin(t, nil, "broker", "audit", "verify", "--log", file, "--key", key)
			if code != 0 || !strings.Contains(out, "OK:") || !strings.Contains(out, "deployment.created 1") {
				t.Fatalf("audit verify of the object in %s: exit %d: %s %s", bucket, code, out, errOut)
			}
		})
	}

	t.Run("missing bucket", func(t *testing.T) {
		_, stderr, code := export("s3://tether-e2e-missing/" + prefix)
		checkOneLineError(t, stderr, code, 1, `"tether-e2e-missing"`)
		if !strings.Contains(stderr, "bucket does not exist") {
			t.Errorf("stderr = %q, want it to say the bucket does not exist", stderr)
		}
		t.Logf("missing bucket: %s", strings.TrimSpace(stderr))
	})
}
