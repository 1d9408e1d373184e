package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
)

// TestAuditDoneWhen walks the tour: export, public key, verify —
// which shows deployment.created and agent.paired — and one changed byte
// in any event line makes verify fail.
func TestAuditDoneWhen(t *testing.T) {
	b := startBroker(t)
	res := b.createDeployment(t, "acme", "prod")
	stateDir := filepath.Join(t.TempDir(), "agent")
	a := b.startAgent(t, stateDir, "--pairing-token", res.Pairing.Token)
	a.waitLine(t, `msg="agent online"`, 90*time.Second)

	dir := t.TempDir()
	export, key, witness := filepath.Join(dir, "e.jsonl"), filepath.Join(dir, "k"), filepath.Join(dir, "w")
	if _, errOut, code := b.cli(t, "audit", "export", "--out", export); code != 0 {
		t.Fatalf("audit export: %s", errOut)
	}
	if _, errOut, code := b.cli(t, "audit", "public-key", "--out", key); code != 0 {
		t.Fatalf("audit public-key: %s", errOut)
	}
	if _, errOut, code := runBin(t, nil, "agent", "witness-key", "--state-dir", stateDir, "--out", witness); code != 0 {
		t.Fatalf("agent witness-key: %s", errOut)
	}
	out, errOut, code := runBin(t, nil, "broker", "audit", "verify", "--log", export, "--key", key)
	if code != 0 {
		t.Fatalf("audit verify: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"OK:", "deployment.created 1", "agent.paired 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}

	orig, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(orig), "\n")
	tampered := filepath.Join(dir, "t.jsonl")
	n := 0
	for i, line := range lines {
		start := strings.Index(line, `"event":{`)
		if start < 0 {
			continue
		}
		// Flip one byte in the middle of the event's JSON.
		pos := start + 9 + (len(line)-start-9)/2
		b := []byte(line)
		b[pos] ^= 0x01
		mod := append(append(append([]string{}, lines[:i]...), string(b)), lines[i+1:]...)
		if err := os.WriteFile(tampered, []byte(strings.Join(mod, "")), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := runBin(t, nil, "broker", "audit", "verify", "--log", tampered, "--key", key)
		if code == 0 || !strings.Contains(errOut, "verification FAILED") || !strings.Contains(errOut, fmt.Sprintf("line %d", i+1)) {
			t.Errorf("verify after changing a byte of line %d: exit %d, %q; want a failure naming the line", i+1, code, errOut)
		}
		n++
	}
	if n < 2 {
		t.Fatalf("export has %d event lines, want at least 2", n)
	}

	// The customer's agent witnesses checkpoints: wait for a cosigned one,
	// export again and verify with the witness key.
	deadline := time.Now().Add(30 * time.Second)
	c := apiClient(t, b)
	for {
		cp, err := c.AuditCheckpoint(context.Background())
		if err == nil && len(cp.Witnesses) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint cosigned by the agent within 30s (last: %+v, %v)", cp, err)
		}
		time.Sleep(200 * time.Millisecond) // polling observable state
	}
	if _, errOut, code := b.cli(t, "audit", "export", "--out", export); code != 0 {
		t.Fatalf("audit export: %s", errOut)
	}
	out, errOut, code = runBin(t, nil, "broker", "audit", "verify", "--log", export, "--key", key, "--witness-key", witness)
	if code != 0 || !strings.Contains(out, "cosigned by a given witness") || strings.Contains(out, " 0 of ") {
		t.Fatalf("verify with the witness key: exit %d, %s %s", code, out, errOut)
	}
	// A wrong key fails.
	if _, errOut, code := runBin(t, nil, "broker", "audit", "verify", "--log", export, "--key", witness); code == 0 {
		t.Errorf("verify with the witness's key as the log key succeeded: %s", errOut)
	}
}

func apiClient(t testing.TB, b *devBroker) *brokerapi.Client {
	t.Helper()
	var cli config.CLI
	if err := config.Load(b.cliJSON, &cli); err != nil {
		t.Fatal(err)
	}
	c, err := brokerapi.NewClient(cli)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAuditCrash kills the broker with SIGKILL while a load generator
// creates deployments; after a restart every acknowledged creation has its
// event and the export verifies.
func TestAuditCrash(t *testing.T) {
	b := startBroker(t)
	c := apiClient(t, b)
	var (
		mu    sync.Mutex
		acked []string
		next  atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				n := next.Add(1)
				res, err := c.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "load", Name: fmt.Sprintf("d%d", n)})
				if err != nil {
					continue // refused or cut off by the kill: not acknowledged
				}
				mu.Lock()
				acked = append(acked, res.Deployment.ID)
				mu.Unlock()
			}
		})
	}
	// Kill once a good number of appends were acknowledged.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling the load generator's progress
	}
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	b.wait(t, 10*time.Second)
	cancel()
	wg.Wait()
	t.Logf("%d creations acknowledged before SIGKILL", len(acked))

	// Restart on the same data dir.
	os.Remove(b.cliJSON)
	p := start(t, "broker-dev", nil, "serve", "--dev", "--data-dir", b.dir, "--listen", "127.0.0.1:0")
	p.waitLine(t, `msg="broker ready"`, 90*time.Second)
	b2 := &devBroker{proc: p, dir: b.dir, cliJSON: b.cliJSON, join: b.join}
	out, errOut, code := b2.cli(t, "audit", "search", "--type", "deployment.created", "--limit", "100000", "--output", "json")
	if code != 0 {
		t.Fatalf("audit search: %s", errOut)
	}
	var evs brokerapi.AuditEvents
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, ae := range evs.Events {
		var e struct {
			Deployment string `json:"deployment"`
		}
		json.Unmarshal(ae.Event, &e)
		have[e.Deployment] = true
	}
	for _, id := range acked {
		if !have[id] {
			t.Errorf("deployment %s was acknowledged but its deployment.created event is missing", id)
		}
	}
	dir := t.TempDir()
	export, key := filepath.Join(dir, "e.jsonl"), filepath.Join(dir, "k")
	if _, errOut, code := b2.cli(t, "audit", "export", "--out", export); code != 0 {
		t.Fatalf("audit export: %s", errOut)
	}
	if _, errOut, code := b2.cli(t, "audit", "public-key", "--out", key); code != 0 {
		t.Fatalf("audit public-key: %s", errOut)
	}
	if out, errOut, code := runBin(t, nil, "broker", "audit", "verify", "--log", export, "--key", key); code != 0 {
		t.Fatalf("verify after the crash: %s %s", out, errOut)
	}
}

// TestAuditBadInput: the reviewer CLI rejects bad input clearly.
func TestAuditBadInput(t *testing.T) {
	dir := t.TempDir()
	notKey := writeFile(t, dir, "notkey", "hello\n")
	bad := writeFile(t, dir, "bad.jsonl", "{\"kind\":\"header\"\n")
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"audit"}, 2, "want a subcommand"},
		{[]string{"audit", "frob"}, 2, "unknown command 'audit frob'"},
		{[]string{"audit", "verify", "--log", bad}, 2, "--log and --key are required"},
		{[]string{"audit", "verify", "--log", bad, "--key", notKey}, 1, "not a verifier key"},
		{[]string{"audit", "verify", "--log", filepath.Join(dir, "nope"), "--key", notKey}, 1, "not a verifier key"},
		{[]string{"audit", "search", "--type", "nope", "--config", notKey}, 2, `--type "nope" is not an event type`},
		{[]string{"audit", "search", "--since", "yesterday", "--config", notKey}, 2, `--since "yesterday": want an RFC 3339 time`},
		{[]string{"audit", "export", "--config", notKey}, 2, "give exactly one of --out FILE or --s3"},
		{[]string{"audit", "export", "--s3", "s3://Bad_Bucket/x", "--config", notKey}, 2, "--s3:"},
	}
	for _, tt := range tests {
		_, stderr, code := runBin(t, nil, "broker", tt.args...)
		checkOneLineError(t, stderr, code, tt.wantCode, tt.want)
	}
}
