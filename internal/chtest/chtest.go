// Package chtest starts a throwaway ClickHouse server from the Debian
// package for tests: loopback only, free ports, a temp directory, the
// default user for setup and Tether's read-only user from
// deploy/clickhouse/users.d/tether.xml. It is only imported by tests.
package chtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testenv"
)

// Password is the password of the tether user in the deploy file.
const Password = "tether-test"

// Server is a running ClickHouse.
type Server struct {
	// URL is the HTTP interface, e.g. http://127.0.0.1:PORT.
	URL string
	// TCPPort is the native protocol's port on 127.0.0.1.
	TCPPort int
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process is reaped
	out     *bytes.Buffer
}

var (
	mu     sync.Mutex
	shared *Server
)

// Start returns the test binary's ClickHouse server, starting it on first
// use; Stop (from TestMain) ends it. A missing clickhouse-server skips the
// test, or fails it under CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		return shared
	}
	bin, err := exec.LookPath("clickhouse-server")
	if err != nil {
		bin, err = exec.LookPath("/usr/sbin/clickhouse-server")
	}
	testenv.Require(t, err == nil, "clickhouse-server is not installed (apt-get install clickhouse-server clickhouse-client; make test does it as root): %v", err)
	s, err := start(bin)
	if err != nil {
		t.Fatalf("start clickhouse-server: %v", err)
	}
	shared = s
	return s
}

// Stop kills the shared server, if started. ClickHouse here is disposable:
// SIGKILL avoids its slow shutdown with keep-alive clients.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		shared.cmd.Process.Kill()
		<-shared.exited
		os.RemoveAll(filepath.Dir(shared.cmd.Args[1][len("--config-file="):]))
		shared = nil
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func repoFile(rel string) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "..", rel)
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

func start(bin string) (*Server, error) {
	dir, err := os.MkdirTemp("", "tether-chtest-")
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"data", "tmp", "user_files", "users.d", "dictionaries"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	tetherUser, err := repoFile("deploy/clickhouse/users.d/tether.xml")
	if err != nil {
		return nil, fmt.Errorf("deploy file: %w", err)
	}
	b, err := os.ReadFile(tetherUser)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "users.d", "tether.xml"), b, 0o644); err != nil {
		return nil, err
	}
	users := `<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>`
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(users), 0o644); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		httpPort, err1 := freePort()
		tcpPort, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		cfg := fmt.Sprintf(`<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>%d</http_port>
  <tcp_port>%d</tcp_port>
  <path>%s/data/</path>
  <tmp_path>%s/tmp/</tmp_path>
  <user_files_path>%s/user_files/</user_files_path>
  <users_config>%s/users.xml</users_config>
  <dictionaries_config>%s/dictionaries/*.xml</dictionaries_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>`, httpPort, tcpPort, dir, dir, dir, dir, dir)
		cfgPath := filepath.Join(dir, "config.xml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		var out bytes.Buffer
		cmd := exec.Command(bin, "--config-file="+cfgPath)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		s := &Server{URL: "http://127.0.0.1:" + strconv.Itoa(httpPort), TCPPort: tcpPort, cmd: cmd, exited: exited, out: &out}
		deadline := time.Now().Add(60 * time.Second)
		for {
			res, err := http.Get(s.URL + "/ping")
			if err == nil {
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					return s, nil
				}
			}
			select {
			case <-exited:
				lastErr = fmt.Errorf("clickhouse-server exited: %s", tail(out.String()))
			case <-time.After(100 * time.Millisecond): // polling its HTTP port
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					return nil, fmt.Errorf("clickhouse-server not ready in 60s: %s", tail(out.String()))
				}
				continue
			}
			break
		}
	}
	return nil, lastErr
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

// AddDictionary writes the definition of an external dictionary (the
// <dictionary> element of ClickHouse's dictionaries configuration) and
// reloads the server's dictionaries as the admin user. A dictionary that
// fails to load is not an error: its failure is in system.dictionaries.
func (s *Server) AddDictionary(t testing.TB, name, definition string) {
	t.Helper()
	dir := filepath.Join(filepath.Dir(s.cmd.Args[1][len("--config-file="):]), "dictionaries")
	xml := "<yandex>\n" + definition + "\n</yandex>\n"
	if err := os.WriteFile(filepath.Join(dir, name+".xml"), []byte(xml), 0o644); err != nil {
		t.Fatalf("write dictionary %s: %v", name, err)
	}
	s.Query("default", "", "SYSTEM RELOAD DICTIONARIES")
}

// Exec runs a statement as the default (admin) user and returns the body.
func (s *Server) Exec(t testing.TB, sql string) string {
	t.Helper()
	body, err := s.Query("default", "", sql)
	if err != nil {
		t.Fatalf("clickhouse %q: %v", sql, err)
	}
	return body
}

// Query runs sql as user over HTTP and returns the body, or an error with
// ClickHouse's message.
func (s *Server) Query(user, password, sql string) (string, error) {
	return s.QueryWith(user, password, sql, nil)
}

// QueryWith is Query with settings given as URL parameters, the way the
// agent gives them (SETTINGS in the statement come too late for some, such
// as log_queries on 18.16).
func (s *Server) QueryWith(user, password, sql string, settings url.Values) (string, error) {
	params := url.Values{"user": {user}, "password": {password}}
	for k, v := range settings {
		params[k] = v
	}
	req, err := http.NewRequest(http.MethodPost, s.URL+"/?"+params.Encode(), strings.NewReader(sql))
	if err != nil {
		return "", err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", res.StatusCode, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}
