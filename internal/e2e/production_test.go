package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devnet"
	"github.com/tetherhq/tether/internal/pgtest"
)

// selfSigned writes a certificate and key for 127.0.0.1 and returns their
// paths.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tether-e2e"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certPath, keyPath
}

// TestProductionMode runs the broker as in production — no --dev: a
// tailnet it does not own (here a control server this test runs, as
// Headscale would be), PostgreSQL, TLS on the API, secrets by env: and
// file: reference — and pairs an agent configured by flags alone.
func TestProductionMode(t *testing.T) {
	dsn := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tn, err := devnet.Start(ctx, devnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })

	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	// The vendor's and two customers' identity providers, run by the test.
	idp := brokertest.NewIdP(t)
	identityJSON, _ := json.Marshal(idp.Config)
	adminToken := filepath.Join(dir, "admin-id-token")
	os.WriteFile(adminToken, []byte(idp.Token(t, "admin@vendor.test")+"\n"), 0o600)
	cfgPath := filepath.Join(dir, "broker.json")
	if err := os.WriteFile(cfgPath, []byte(`{
  "data_dir": "`+filepath.Join(dir, "data")+`",
  "listen": "127.0.0.1:0",
  "tls_cert": "`+cert+`",
  "tls_key": "`+key+`",
  "store_driver": "postgres",
  "store_dsn": "env:TETHER_E2E_PG_DSN",
  "control_url": "`+tn.ControlURL+`",
  "auth_key": "env:TETHER_E2E_TS_KEY",
  "hostname": "broker-prod",
  "identity": `+string(identityJSON)+`,
  "heartbeat_interval": "500ms"
}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"TETHER_E2E_PG_DSN=" + dsn, "TETHER_E2E_TS_KEY=" + tn.AuthKey}
	b := start(t, "broker", env, "serve", "--config", cfgPath)
	ready := b.waitLine(t, `msg="broker ready"`, 90*time.Second)
	m := regexp.MustCompile(`api=(https://127\.0\.0\.1:\d+)`).FindStringSubmatch(ready)
	if m == nil {
		t.Fatalf("ready line %q has no https API URL", ready)
	}
	for _, f := range []string{"join.json", "cli.json"} {
		if _, err := os.Stat(filepath.Join(dir, "data", f)); err == nil {
			t.Errorf("production broker wrote %s; only dev mode does", f)
		}
	}
	if strings.Contains(b.output(), tn.AuthKey) {
		t.Error("the broker logged a secret")
	}

	cliPath := filepath.Join(dir, "cli.json")
	if err := config.Write(cliPath, config.CLI{APIURL: m[1], Token: "file:" + adminToken, CAFile: cert}, 0o600); err != nil {
		t.Fatal(err)
	}
	cliEnv := []string{"TETHER_CONFIG=" + cliPath}
	out, errOut, code := runBin(t, cliEnv, "broker", "info", "--output", "json")
	if code != 0 {
		t.Fatalf("broker info: %s", errOut)
	}
	var bi brokerapi.BrokerInfo
	if err := json.Unmarshal([]byte(out), &bi); err != nil || !strings.HasPrefix(bi.BrokerKey, "ed25519:") || !strings.HasPrefix(bi.TailnetName, "broker-prod.") {
		t.Fatalf("broker info = %+v, %v", bi, err)
	}
	out, errOut, code = runBin(t, cliEnv, "broker", "deployment", "create", "--tenant", "globex", "--name", "prod", "--output", "json")
	if code != 0 {
		t.Fatalf("create: %s", errOut)
	}
	var res brokerapi.CreateDeploymentResponse
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "pairing-token")
	os.WriteFile(tokenFile, []byte(res.Pairing.Token+"\n"), 0o600)

	a := start(t, "agent", []string{"TETHER_E2E_TS_KEY=" + tn.AuthKey}, "run", "--state-dir", filepath.Join(dir, "agent"),
		"--control-url", tn.ControlURL, "--auth-key", "env:TETHER_E2E_TS_KEY",
		"--broker-name", bi.TailnetName, "--broker-key", bi.BrokerKey, "--pairing-token", "file:"+tokenFile)
	a.waitLine(t, `msg="agent online"`, 90*time.Second)
	out, errOut, code = runBin(t, cliEnv, "broker", "deployment", "show", "globex/prod", "--output", "json")
	if code != 0 {
		t.Fatalf("show: %s", errOut)
	}
	if !strings.Contains(out, `"agent_status": "online"`) {
		t.Errorf("show = %s, want the agent online", out)
	}
	// Without the CA the CLI refuses the broker's certificate.
	noCA := filepath.Join(dir, "noca.json")
	config.Write(noCA, config.CLI{APIURL: m[1], Token: "file:" + adminToken}, 0o600)
	if _, errOut, code := runBin(t, []string{"TETHER_CONFIG=" + noCA}, "broker", "deployment", "list"); code == 0 || !strings.Contains(errOut, "certificate") {
		t.Errorf("CLI without ca_file: exit %d, %q; want a certificate error", code, errOut)
	}
}

// TestBrokerUnreachableControl: outside dev mode, a control server nobody
// answers is a clear error within a bounded time.
func TestBrokerUnreachableControl(t *testing.T) {
	start := time.Now()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "broker.json")
	os.WriteFile(cfg, []byte(`{"identity":{"issuers":[{"name":"vendor","issuer_url":"https://login.vendor.example","client_id":"tether","admins":["root"]}]}}`), 0o600)
	_, stderr, code := runBin(t, []string{"TETHER_CONTROL_URL=http://127.0.0.1:1", "TETHER_AUTH_KEY=k"},
		"broker", "serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--config", cfg)
	checkOneLineError(t, stderr, code, 1, "cannot reach the tailnet control server at http://127.0.0.1:1")
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v, want under 15s", d)
	}
}
