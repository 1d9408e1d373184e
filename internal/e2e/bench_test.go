package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkBrokerStart measures `broker-dev serve --dev` from process start to
// its "broker ready" line (dev tailnet up, broker node joined, API bound).
func BenchmarkBrokerStart(b *testing.B) {
	for b.Loop() {
		dir := b.TempDir()
		t0 := time.Now()
		p := start(b, "broker-dev", nil, "serve", "--dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
		p.waitLine(b, `msg="broker ready"`, 90*time.Second)
		b.ReportMetric(float64(time.Since(t0).Milliseconds()), "ms-to-ready")
		p.stop()
	}
}

// BenchmarkAgentStartToPaired measures `agent run` with a fresh token from
// process start to "agent paired" and to "agent online" (first heartbeat
// accepted), and reports the agent's idle RSS after a few heartbeats.
func BenchmarkAgentStartToPaired(b *testing.B) {
	dir := b.TempDir()
	br := start(b, "broker-dev", nil, "serve", "--dev", "--data-dir", dir, "--listen", "127.0.0.1:0", "--heartbeat-interval", "1s")
	br.waitLine(b, `msg="broker ready"`, 90*time.Second)
	cliEnv := []string{"TETHER_CONFIG=" + filepath.Join(dir, "cli.json")}
	var paired, online time.Duration
	var rss float64
	i := 0
	for b.Loop() {
		i++
		out, errOut, code := runBin(b, cliEnv, "broker", "deployment", "create", "--tenant", "bench", "--name", fmt.Sprintf("d%d", i), "--output", "json")
		if code != 0 {
			b.Fatalf("create: %s", errOut)
		}
		token := out[strings.Index(out, "tpt_"):]
		token = token[:strings.IndexByte(token, '"')]
		t0 := time.Now()
		a := start(b, "agent", nil, "run", "--join", filepath.Join(dir, "join.json"), "--state-dir", b.TempDir(), "--pairing-token", token, "--hostname", fmt.Sprintf("bench%d", i))
		a.waitLine(b, `msg="agent paired"`, 90*time.Second)
		paired += time.Since(t0)
		a.waitLine(b, `msg="agent online"`, 90*time.Second)
		online += time.Since(t0)
		if i == 1 {
			// Idle: three heartbeat intervals after coming online.
			b.StopTimer()
			time.Sleep(3 * time.Second)
			rss = rssMB(b, a.cmd.Process.Pid)
			b.StartTimer()
		}
		a.stop()
	}
	b.ReportMetric(float64(paired.Milliseconds())/float64(i), "ms-to-paired")
	b.ReportMetric(float64(online.Milliseconds())/float64(i), "ms-to-online")
	b.ReportMetric(rss, "idle-RSS-MB")
	if fi, err := os.Stat(filepath.Join(binDir, "agent")); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "agent-binary-MB")
	}
}

func rssMB(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// TestAgentBinarySize keeps the agent small enough to ship everywhere: at
// most 40 MB as the tests build it (not stripped; `make build` strips).
func TestAgentBinarySize(t *testing.T) {
	fi, err := os.Stat(filepath.Join(binDir, "agent"))
	if err != nil {
		t.Fatal(err)
	}
	if mb := float64(fi.Size()) / (1 << 20); mb > 40 {
		t.Errorf("agent binary is %.1f MB, want at most 40 MB", mb)
	}
}
