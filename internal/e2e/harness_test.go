package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/chtest"
)

// binDir holds the binaries TestMain builds.
var binDir string

func TestMain(m *testing.M) {
	if addr := os.Getenv("TETHER_E2E_LISTEN"); addr != "" {
		os.Exit(listenHelper(addr))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tether-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "ts_omit_peerapiserver", "-o", dir+"/", "./cmd/broker", "./cmd/broker-dev", "./cmd/agent")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		return 1
	}
	binDir = dir
	defer chtest.Stop()
	return m.Run()
}

// proc is a running binary whose stderr lines are logged and watched.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done

	mu      sync.Mutex
	lines   []string
	waiters []waiter
	stdout  lockedBuffer
}

// lockedBuffer collects a process's stdout.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type waiter struct {
	substr string
	ch     chan string
}

// start runs a binary from binDir with args; env adds variables.
func start(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command(filepath.Join(binDir, name), args...), env)
}

func startCmd(t testing.TB, label string, cmd *exec.Cmd, env []string) *proc {
	t.Helper()
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = &p.stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			t.Logf("%s: %s", label, line)
			p.mu.Lock()
			p.lines = append(p.lines, line)
			keep := p.waiters[:0]
			for _, w := range p.waiters {
				if strings.Contains(line, w.substr) {
					w.ch <- line
				} else {
					keep = append(keep, w)
				}
			}
			p.waiters = keep
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// waitLine waits until the process logs a line containing substr and
// returns it. It fails the test if the process exits first.
func (p *proc) waitLine(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	ch := make(chan string, 1)
	p.mu.Lock()
	for _, l := range p.lines {
		if strings.Contains(l, substr) {
			p.mu.Unlock()
			return l
		}
	}
	p.waiters = append(p.waiters, waiter{substr, ch})
	p.mu.Unlock()
	select {
	case l := <-ch:
		return l
	case <-p.done:
		select {
		case l := <-ch:
			return l
		default:
		}
		t.Fatalf("process exited (%v) before logging %q", p.err, substr)
	case <-time.After(timeout):
		t.Fatalf("no log line %q within %v", substr, timeout)
	}
	return ""
}

// wait waits for the process to exit and returns its error.
func (p *proc) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %v", timeout)
		return nil
	}
}

// output returns everything the process logged.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// devBroker is a running `broker-dev serve --dev`; its CLI commands run
// with the production broker binary, whose commands are the same.
type devBroker struct {
	*proc
	dir     string // data dir
	cliJSON string
	join    string
}

func startBroker(t testing.TB, extra ...string) *devBroker {
	t.Helper()
	dir := t.TempDir()
	args := []string{"serve", "--dev", "--data-dir", dir, "--listen", "127.0.0.1:0"}
	if !slices.Contains(extra, "--heartbeat-interval") {
		// Tests see agents come and go quickly; a benchmark may ask for
		// the deployed default instead.
		args = append(args, "--heartbeat-interval", "500ms")
	}
	args = append(args, extra...)
	p := start(t, "broker-dev", nil, args...)
	p.waitLine(t, `msg="broker ready"`, 90*time.Second)
	return &devBroker{proc: p, dir: dir, cliJSON: filepath.Join(dir, "cli.json"), join: filepath.Join(dir, "join.json")}
}

// cli runs a broker CLI command against b and returns stdout, stderr and
// the exit code.
func (b *devBroker) cli(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	return runBin(t, []string{"TETHER_CONFIG=" + b.cliJSON}, "broker", args...)
}

func runBin(t testing.TB, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out.String(), errb.String(), code
}

// createDeployment creates tenant/name and returns its pairing token.
func (b *devBroker) createDeployment(t testing.TB, tenant, name string) brokerapi.CreateDeploymentResponse {
	t.Helper()
	out, errOut, code := b.cli(t, "deployment", "create", "--tenant", tenant, "--name", name, "--region", "us-east-1", "--output", "json")
	if code != 0 {
		t.Fatalf("deployment create: exit %d: %s", code, errOut)
	}
	var res brokerapi.CreateDeploymentResponse
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("deployment create output: %v\n%s", err, out)
	}
	return res
}

func (b *devBroker) show(t testing.TB, ref string) brokerapi.Deployment {
	t.Helper()
	out, errOut, code := b.cli(t, "deployment", "show", ref, "--output", "json")
	if code != 0 {
		t.Fatalf("deployment show %s: exit %d: %s", ref, code, errOut)
	}
	var d brokerapi.Deployment
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("deployment show output: %v\n%s", err, out)
	}
	return d
}

// waitStatus polls the API until the deployment's agent has status want.
func (b *devBroker) waitStatus(t testing.TB, ref, want string, timeout time.Duration) brokerapi.Deployment {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d := b.show(t, ref)
		if d.AgentStatus == want {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment %s: agent status %q after %v, want %q", ref, d.AgentStatus, timeout, want)
		}
		time.Sleep(100 * time.Millisecond) // polling an observable state, not synchronising
	}
}

// startAgent starts `agent run` with the given args plus --join and
// --state-dir.
func (b *devBroker) startAgent(t testing.TB, stateDir string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"run", "--join", b.join, "--state-dir", stateDir}, extra...)
	return start(t, "agent", nil, args...)
}
