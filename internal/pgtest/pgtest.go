// Package pgtest starts throwaway PostgreSQL clusters for tests, from the
// binaries of a local PostgreSQL installation (Debian's postgresql package,
// or pg_ctl on the PATH). A cluster lives in a temporary directory, listens
// on a free port on 127.0.0.1 only, runs with fsync off, and is stopped and
// removed when the test that started it ends.
//
// initdb and postgres refuse to run as root; as root, pgtest runs them as
// the postgres user with runuser. Where PostgreSQL is missing the test is
// skipped, or fails in CI (see [testenv.Require]).
//
// Starting a cluster takes a second or two, creating a database in it a
// tenth: a package whose tests need many databases shares one cluster with
// [Main] and [Shared].
//
// A test binary killed before its cleanups run (by -timeout, say) leaves
// its cluster running, in a directory tether-pgtest-* under [os.TempDir];
// "pg_ctl stop -D <dir>/data" stops it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tetherhq/tether/internal/testenv"
)

// Timeouts bounding a cluster's start and stop and a database's creation.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
	adminTimeout = 30 * time.Second
)

// Cluster is a running throwaway PostgreSQL cluster.
type Cluster struct {
	inst     install
	dir      string // holds data/, the unix socket, the log and the password file
	port     int
	password string // of the superuser postgres

	// mu serialises CREATE DATABASE: on a small machine, concurrent
	// copies of the template take longer than one after another.
	mu        sync.Mutex
	databases int // how many NewDatabase created, to name them
}

// Start starts a cluster for t, creates a database in it and returns the
// database's DSN (a postgres:// URL). The cluster is removed when t ends.
func Start(t testing.TB) (dsn string) {
	t.Helper()
	return StartCluster(t).NewDatabase(t)
}

// StartCluster starts a cluster that is removed when t ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	inst, missing := findInstall()
	testenv.Require(t, missing == "", "PostgreSQL: %s", missing)
	c, err := start(inst)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Errorf("stop PostgreSQL: %v", err)
		}
	})
	return c
}

// NewDatabase creates a new, empty database and returns its DSN. Where the
// server supports it, the database collates text like glibc's en_US.UTF-8,
// a common production default, rather than byte by byte: it ignores
// punctuation, sorting "web10" before "web-2". Queries that rely on byte
// order fail in tests as they would in production.
func (c *Cluster) NewDatabase(t testing.TB) (dsn string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.databases++
	name := fmt.Sprintf("test%d", c.databases)
	if err := c.createDatabase(t.Context(), name); err != nil {
		t.Fatalf("create PostgreSQL database %s: %v", name, err)
	}
	return c.DSN(name)
}

// DSN returns the DSN of the named database, logging in as the superuser.
func (c *Cluster) DSN(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", c.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

func (c *Cluster) createDatabase(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return err
	}
	create := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if version >= 150000 { // the first with LOCALE_PROVIDER
		_, err := conn.Exec(ctx, create+" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US-u-ka-shifted' LOCALE 'C'"+
			// Faster than WAL_LOG for tiny databases without fsync.
			" STRATEGY FILE_COPY")
		if err == nil || !strings.Contains(err.Error(), "ICU is not supported") {
			return err
		}
	}
	_, err = conn.Exec(ctx, create)
	return err
}

// install is a PostgreSQL installation and how to run its programs.
type install struct {
	binDir string
	// asUser is the command prefix running a program as the cluster's
	// owner, empty if that is the current user.
	asUser []string
	// uid and gid own the cluster's directory, or are -1.
	uid, gid int
}

// findInstall finds the newest PostgreSQL installation, or returns why
// there is none usable.
func findInstall() (install, string) {
	inst := install{uid: -1, gid: -1}
	inst.binDir = newestBinDir()
	if inst.binDir == "" {
		return inst, "no initdb and pg_ctl in /usr/lib/postgresql/*/bin or on the PATH; install PostgreSQL (apt-get install postgresql)"
	}
	if os.Geteuid() != 0 {
		return inst, ""
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return inst, fmt.Sprintf("running as root, initdb refuses root, and there is no postgres user to run it as: %v", err)
	}
	runuser, err := exec.LookPath("runuser")
	if err != nil {
		return inst, fmt.Sprintf("running as root, initdb refuses root, and runuser, to run it as postgres, is missing: %v", err)
	}
	inst.asUser = []string{runuser, "-u", "postgres", "--"}
	inst.uid, _ = strconv.Atoi(u.Uid)
	inst.gid, _ = strconv.Atoi(u.Gid)
	return inst, ""
}

// newestBinDir returns the directory of the newest PostgreSQL binaries, or
// "" if it finds none.
func newestBinDir() string {
	has := func(dir string) bool {
		for _, prog := range []string{"initdb", "pg_ctl", "postgres"} {
			if _, err := os.Stat(filepath.Join(dir, prog)); err != nil {
				return false
			}
		}
		return true
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	dirs = slices.DeleteFunc(dirs, func(d string) bool { return !has(d) })
	if len(dirs) > 0 {
		// Version directories are "15", "16", or "9.6" for old ones.
		return slices.MaxFunc(dirs, func(a, b string) int {
			return compareVersions(filepath.Base(filepath.Dir(a)), filepath.Base(filepath.Dir(b)))
		})
	}
	if pgCtl, err := exec.LookPath("pg_ctl"); err == nil && has(filepath.Dir(pgCtl)) {
		return filepath.Dir(pgCtl)
	}
	return ""
}

// compareVersions compares dotted version numbers such as "9.6" and "16".
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// start initialises and starts a cluster in a new temporary directory.
func start(inst install) (c *Cluster, err error) {
	// Not t.TempDir: its parent directories may not let the postgres user
	// through.
	dir, err := os.MkdirTemp("", "tether-pgtest-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{inst: inst, dir: dir, password: randomPassword()}
	defer func() {
		if err != nil {
			// In case postgres is up but failed a later check or
			// pg_ctl timed out waiting for it; this fails harmlessly
			// if it is not.
			ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			c.run(ctx, "pg_ctl", "stop", "--pgdata", c.dataDir(), "--mode", "immediate", "--wait")
			os.RemoveAll(dir)
		}
	}()
	if inst.uid >= 0 {
		if err := os.Chown(dir, inst.uid, inst.gid); err != nil {
			return nil, err
		}
	}

	// The password goes to initdb in a file, not on a command line that
	// other users can read.
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(c.password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if inst.uid >= 0 {
		if err := os.Chown(pwFile, inst.uid, inst.gid); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if out, err := c.run(ctx, "initdb", "--pgdata", c.dataDir(), "--username", "postgres", "--pwfile", pwFile,
		"--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	os.Remove(pwFile)

	// Another process may take the free port before postgres binds it: try
	// a few.
	for attempt := 1; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
		err = c.startServer(ctx)
		if err == nil || attempt == 5 || !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// startServer starts postgres on c.port and waits until it accepts
// connections or fails.
func (c *Cluster) startServer(ctx context.Context) error {
	conf := fmt.Sprintf(`
# Added by pgtest: private, fast and forgetful.
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
`, c.port, c.dir)
	f, err := os.OpenFile(filepath.Join(c.dataDir(), "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	logFile := filepath.Join(c.dir, "postgres.log")
	// pg_ctl -w waits, bounded by -t, until postgres reports itself ready
	// in its PID file, and returns as soon as postgres exits.
	out, err := c.run(ctx, "pg_ctl", "start", "--pgdata", c.dataDir(), "--log", logFile,
		"--wait", "--timeout", strconv.Itoa(int(startTimeout/time.Second)))
	if err != nil {
		log, _ := os.ReadFile(logFile)
		return fmt.Errorf("pg_ctl start on port %d: %w\n%s\nlog:\n%s", c.port, err, out, log)
	}
	return nil
}

// waitReady tries to connect until it succeeds or ctx is done.
func (c *Cluster) waitReady(ctx context.Context) error {
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect to PostgreSQL on port %d: %w", c.port, err)
		case <-time.After(delay):
		}
	}
}

// stop stops the cluster, without a checkpoint, and removes it.
func (c *Cluster) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	out, err := c.run(ctx, "pg_ctl", "stop", "--pgdata", c.dataDir(), "--mode", "immediate", "--wait")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
	}
	return os.RemoveAll(c.dir)
}

func (c *Cluster) dataDir() string {
	return filepath.Join(c.dir, "data")
}

// run runs one of the installation's programs as the cluster's owner.
func (c *Cluster) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	argv := append(slices.Clone(c.inst.asUser), filepath.Join(c.inst.binDir, prog))
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// PGDATA, PGPORT and friends of the developer's environment must not
	// point our programs elsewhere.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port != 5432 { // a real PostgreSQL's
			return port, nil
		}
	}
}

func randomPassword() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// shared is the cluster [Shared] returns, started on first use.
var shared struct {
	sync.Mutex
	inMain  bool
	cluster *Cluster
	err     error
}

// Main runs the tests of a package whose tests call [Shared], and stops the
// shared cluster, if they started it, once they are done. Call it from the
// package's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()

	code := m.Run()

	shared.Lock()
	defer shared.Unlock()
	if shared.cluster != nil {
		if err := shared.cluster.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop shared PostgreSQL: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Shared returns the cluster the tests of the package share, starting it
// if need be. The package's TestMain must call [Main]. Tests sharing a
// cluster should each work in databases of their own ([Cluster.NewDatabase]).
func Shared(t testing.TB) *Cluster {
	t.Helper()
	inst, missing := findInstall()
	testenv.Require(t, missing == "", "PostgreSQL: %s", missing)

	shared.Lock()
	defer shared.Unlock()
	if !shared.inMain {
		t.Fatal("pgtest.Shared needs TestMain to call pgtest.Main, which stops the cluster; or use pgtest.StartCluster")
	}
	if shared.cluster == nil && shared.err == nil {
		shared.cluster, shared.err = start(inst)
		if shared.err != nil {
			shared.err = fmt.Errorf("start shared PostgreSQL: %w", shared.err)
		}
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.cluster
}
