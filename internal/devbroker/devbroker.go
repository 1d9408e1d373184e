// Package devbroker is the dev preset of the broker, for `broker-dev serve
// --dev`, `make run` and the tests: a private tailnet in-process (package
// devnet) and an embedded OpenID Connect provider that signs anyone in as
// any dev user (package devidp). The production broker plugs in none of
// it: it only defines [broker.DevEnv], which [Env] implements, and only
// cmd/broker-dev and test code import this package, so bin/broker links
// no test control server, DERP server, httptest or dev identity provider
// (internal/guardrails holds it to that).
package devbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devidp"
	"github.com/tetherhq/tether/internal/devnet"
	"github.com/tetherhq/tether/internal/devtickets"
)

// Config configures the dev preset.
type Config struct {
	// Addr is the IPv4 address the dev tailnet binds to; empty means
	// 127.0.0.1. Anything but loopback is for tests that place agents in
	// other network namespaces (--dev-addr).
	Addr string
}

// Env is the dev preset of one broker. Give a new one to each broker
// (broker.Config.Dev); the broker starts it and closes it.
type Env struct {
	cfg Config
	// The dev ticket fixture, so that a dev broker without GitHub can show
	// break-glass: Env is a broker.TicketSource.
	devtickets.Source

	mu  sync.Mutex
	net *devnet.Tailnet
	idp *devidp.IdP
}

var (
	_ broker.DevEnv       = (*Env)(nil)
	_ broker.TicketSource = (*Env)(nil)
)

// New returns the dev preset; nothing runs until the broker starts it.
func New(cfg Config) *Env { return &Env{cfg: cfg} }

// StartTailnet starts the private tailnet, reusing the control port and
// auth key of prev (the join file of the previous run) so that paired
// agents keep working across restarts.
func (e *Env) StartTailnet(ctx context.Context, prev config.Join, stateDir string, log *slog.Logger) (controlURL, authKey string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.net != nil {
		return "", "", errors.New("dev tailnet already started: give each broker its own devbroker.Env")
	}
	port := 0
	if u, err := url.Parse(prev.ControlURL); err == nil && prev.ControlURL != "" {
		port, _ = strconv.Atoi(u.Port())
	}
	dn, err := devnet.Start(ctx, devnet.Config{
		Addr:        e.cfg.Addr,
		ControlPort: port,
		AuthKey:     prev.AuthKey,
		StateFile:   filepath.Join(stateDir, "devnet-nodes.json"),
		Logger:      log,
	})
	if err != nil {
		return "", "", err
	}
	e.net = dn
	return dn.ControlURL, dn.AuthKey, nil
}

// StartIdentity builds the embedded identity provider served under base
// (see [Identity]) with the web login's callback as its redirect URI.
func (e *Env) StartIdentity(base string, now func() time.Time, redirectURI string) (broker.DevIdentity, error) {
	idp, cfg, err := Identity(base, now, redirectURI)
	if err != nil {
		return broker.DevIdentity{}, err
	}
	e.mu.Lock()
	e.idp = idp
	e.mu.Unlock()
	return broker.DevIdentity{Handler: idp.Handler(), Config: cfg, Users: Users()}, nil
}

// IdP is the embedded identity provider once the broker has started it,
// for tests that mint dev users' ID tokens; nil before.
func (e *Env) IdP() *devidp.IdP {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.idp
}

// Close stops the dev tailnet. It is safe to call more than once.
func (e *Env) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.net == nil {
		return nil
	}
	err := e.net.Close()
	e.net = nil
	if err != nil {
		return fmt.Errorf("stop the dev tailnet: %w", err)
	}
	return nil
}
