// Package mototest runs moto_server, a local emulation of AWS, for tests of
// code that talks to S3, and gives the AWS SDK, in the test process or in a
// subprocess, static test credentials and a region to use with it. Only
// tests import it.
//
// moto_server comes from Python (pip install 'moto[server]'). Where it is
// not on the PATH the test is skipped, or fails in CI (see
// [testenv.Require]).
//
// moto_server takes about a second to start: a package whose tests use it
// can share one with [Main] and [Endpoint]; a single test can have its own
// with [Start].
//
// A test binary killed before its cleanups run (by -timeout, say) leaves
// moto_server running; it listens on 127.0.0.1 only, and can be found with
// "pgrep -a moto_server".
package mototest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testenv"
)

const (
	// readyTimeout bounds the wait for a started moto_server to answer HTTP.
	readyTimeout = 30 * time.Second
	// attempts is how many ports are tried; see [start].
	attempts = 3
	// logTail is how much of moto_server's output a start error quotes.
	logTail = 2000
)

// server is a running moto_server.
type server struct {
	endpoint string
	cmd      *exec.Cmd
	exited   chan struct{}
	log      *lockedBuffer
}

// stop kills the server and waits for it to exit.
func (s *server) stop() {
	s.cmd.Process.Kill()
	<-s.exited
}

// shared is the server [Endpoint] returns, started on first use. It is
// started lazily so that tests that do not need it (go test -run X) do not
// wait for it, and stopped by [Main] after the last test: a per-test
// t.Cleanup would stop it under the tests that come after.
var shared struct {
	inMain atomic.Bool
	once   sync.Once
	server *server
	err    error
}

// Main runs the tests of a package whose tests call [Endpoint], and stops
// the shared moto_server, if they started it, once they are done. Call it
// from the package's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(mototest.Main(m)) }
func Main(m *testing.M) int {
	shared.inMain.Store(true)
	code := m.Run()
	// m.Run has returned, so no test is in shared.once.Do.
	if shared.server != nil {
		shared.server.stop()
	}
	return code
}

// Endpoint returns the base URL, http://127.0.0.1:PORT, of the moto_server
// that the tests of the package share, starting it if need be. The
// package's TestMain must call [Main]. Tests sharing the server should use
// buckets of their own.
func Endpoint(t testing.TB) string {
	t.Helper()
	path := lookPath(t)
	if !shared.inMain.Load() {
		t.Fatal("mototest.Endpoint needs TestMain to call mototest.Main, which stops moto_server; or use mototest.Start")
	}
	shared.once.Do(func() {
		shared.server, shared.err = startLogged(t, path)
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.server.endpoint
}

// Start starts a moto_server of t's own, stopped when t ends, and returns
// its base URL, http://127.0.0.1:PORT.
func Start(t testing.TB) string {
	t.Helper()
	s, err := startLogged(t, lookPath(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s.endpoint
}

func lookPath(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("moto_server")
	testenv.Require(t, err == nil, "moto_server is not on PATH (pip install 'moto[server]'): %v", err)
	return path
}

func startLogged(t testing.TB, path string) (*server, error) {
	t.Helper()
	begin := time.Now()
	s, err := start(path)
	if err != nil {
		return nil, fmt.Errorf("start moto_server: %w", err)
	}
	t.Logf("moto_server ready at %s after %v", s.endpoint, time.Since(begin).Round(time.Millisecond))
	return s, nil
}

// start starts moto_server on a free loopback port and waits until it
// answers HTTP. The port is found by listening on :0 and closing; should
// another process take it in between, moto exits and the next port is
// tried. A failed attempt's error quotes the end of moto's output.
func start(path string) (*server, error) {
	var errs []error
	for range attempts {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		log := new(lockedBuffer)
		cmd := exec.Command(path, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		s := &server{endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, exited: make(chan struct{}), log: log}
		go func() { cmd.Wait(); close(s.exited) }()

		if err := waitHTTP(s.endpoint, s.exited, readyTimeout); err != nil {
			s.stop()
			errs = append(errs, fmt.Errorf("port %d: %w; output:\n%s", port, err, log.tail(logTail)))
			continue
		}
		return s, nil
	}
	return nil, errors.Join(errs...)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP polls url until it gives any HTTP response, the process exits or
// the deadline passes.
func waitHTTP(url string, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("moto_server exited before it was ready")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", timeout, err)
		}
	}
}

// lockedBuffer collects moto_server's output, written from two pipes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// tail returns the last n bytes written.
func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	return s[max(0, len(s)-n):]
}

// AWSEnv returns, as KEY=VALUE pairs for [exec.Cmd.Env], the environment
// [SetAWSEnv] sets: static test credentials, which moto accepts, the region
// us-east-1, and nothing of the developer's own AWS configuration. Appended
// to [os.Environ], it overrides what that holds.
func AWSEnv(t testing.TB) []string {
	t.Helper()
	none := filepath.Join(t.TempDir(), "none") // a file that does not exist
	return []string{
		"AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test",
		"AWS_SESSION_TOKEN=",
		"AWS_REGION=us-east-1",
		"AWS_DEFAULT_REGION=",
		"AWS_PROFILE=",
		"AWS_CONFIG_FILE=" + none,
		"AWS_SHARED_CREDENTIALS_FILE=" + none,
		"AWS_ENDPOINT_URL=",
		"AWS_ENDPOINT_URL_S3=",
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// SetAWSEnv gives the AWS SDK in the test process static test credentials
// and a region, and hides the developer's own AWS configuration from it,
// for the duration of t (see [testing.T.Setenv]). The variables are those
// of [AWSEnv].
func SetAWSEnv(t testing.TB) {
	t.Helper()
	for _, kv := range AWSEnv(t) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}
