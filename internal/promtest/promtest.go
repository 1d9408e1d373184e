// Package promtest starts a throwaway Prometheus from the Debian package
// for tests: loopback only, a free port, a temp TSDB, scraping itself every
// second. It is only imported by tests.
package promtest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testenv"
)

// Server is a running Prometheus.
type Server struct {
	URL    string // e.g. http://127.0.0.1:PORT
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process is reaped
	dir    string
}

var (
	mu     sync.Mutex
	shared *Server
)

// Start returns the test binary's Prometheus, starting it on first use;
// Stop (from TestMain) ends it. A missing prometheus skips the test, or
// fails it under CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		return shared
	}
	bin, err := exec.LookPath("prometheus")
	testenv.Require(t, err == nil, "prometheus is not installed (apt-get install --no-install-recommends prometheus; make test does it as root): %v", err)
	s, err := start(bin, "")
	if err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	shared = s
	return s
}

// Stop kills the shared server, if started.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		shared.stop()
		shared = nil
	}
}

func (s *Server) stop() {
	s.cmd.Process.Kill()
	<-s.exited
	os.RemoveAll(s.dir)
}

// Options configure a Prometheus of a test's own.
type Options struct {
	// ScrapeConfigs is YAML appended to the scrape_configs list, after
	// the job that scrapes Prometheus itself: list items indented by
	// two spaces, such as "  - job_name: x\n    static_configs: …".
	ScrapeConfigs string
}

// StartOwn starts a Prometheus for the calling test alone, configured by
// opts, and stops it when the test ends.
func StartOwn(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	testenv.Require(t, err == nil, "prometheus is not installed (apt-get install --no-install-recommends prometheus; make test does it as root): %v", err)
	s, err := start(bin, opts.ScrapeConfigs)
	if err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

func start(bin, scrapeConfigs string) (*Server, error) {
	dir, err := os.MkdirTemp("", "tether-promtest-")
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['%s']\n", addr) + scrapeConfigs
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--web.listen-address="+addr,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s := &Server{URL: "http://" + addr, cmd: cmd, exited: exited, dir: dir}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if res, err := http.Get(s.URL + "/-/ready"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("prometheus exited: %s", out.String())
		case <-time.After(100 * time.Millisecond): // polling its readiness endpoint
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return nil, fmt.Errorf("prometheus not ready in 60s: %s", out.String())
		}
	}
}

// WaitForSamples waits until Prometheus has scraped itself at least once,
// so that `up` has a value.
func (s *Server) WaitForSamples(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(s.URL + "/api/v1/query?query=up")
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(res.Body)
			res.Body.Close()
			if bytes.Contains(b.Bytes(), []byte(`"value"`)) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus has no samples after 30s")
		}
		time.Sleep(200 * time.Millisecond) // polling for the first scrape
	}
}
