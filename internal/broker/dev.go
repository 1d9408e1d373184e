package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/identity"
)

// DevEnv is the dev preset of `broker-dev serve --dev`: a private tailnet
// and an identity provider that signs anyone in as any dev user. The
// production broker defines this hook and implements none of it, so that
// it links no test control server, DERP server, httptest or dev identity
// provider; package devbroker implements it, and only cmd/broker-dev and
// tests import that. A broker with a DevEnv also listens on loopback only,
// needs no tailnet credentials or identity configuration, writes a
// bootstrap admin token to DataDir/cli.json and tells the policy it is a
// dev broker.
type DevEnv interface {
	// StartTailnet starts the private tailnet and returns how nodes join
	// it. prev is the join file of the previous run (zero on a first
	// start): reusing its control port and auth key keeps paired agents
	// working across restarts. The control server keeps the nodes it
	// registered in stateDir, so that every node gets its ID and
	// addresses back after a restart.
	StartTailnet(ctx context.Context, prev config.Join, stateDir string, log *slog.Logger) (controlURL, authKey string, err error)
	// StartIdentity builds the identity provider the broker serves under
	// base (an absolute URL ending in its path) and trusts alone;
	// redirectURI is the web login's callback.
	StartIdentity(base string, now func() time.Time, redirectURI string) (DevIdentity, error)
	// Close stops what StartTailnet started. The broker calls it when it
	// stops, or when New fails.
	Close() error
}

// DevIdentity is a dev broker's embedded identity provider.
type DevIdentity struct {
	// Handler serves the provider under the base URL it was built for.
	Handler http.Handler
	// Config trusts the provider's issuers, and nothing else.
	Config identity.Config
	// Users are the dev users, listed by the auth config endpoint.
	Users []brokerapi.DevUser
}

// devIdPPath is where a dev broker serves its embedded identity provider.
const devIdPPath = "/dev/idp"

// startDev starts the dev tailnet, reusing the control port and auth key
// of the previous run, and makes the bootstrap admin token.
func (b *Broker) startDev(ctx context.Context) error {
	var prev config.Join
	if config.Load(filepath.Join(b.cfg.DataDir, "join.json"), &prev) != nil {
		prev = config.Join{}
	}
	controlURL, authKey, err := b.cfg.Dev.StartTailnet(ctx, prev, b.cfg.DataDir, b.cfg.Logger)
	if err != nil {
		return err
	}
	b.controlURL, b.authKey = controlURL, authKey
	var tok [32]byte
	rand.Read(tok[:])
	b.devAdminToken = "tat_" + base64.RawURLEncoding.EncodeToString(tok[:])
	b.adminHash = sha256.Sum256([]byte(b.devAdminToken))
	return nil
}

// startDevIdentity builds the embedded identity provider once the API's
// address is known, and trusts it alone.
func (b *Broker) startDevIdentity() error {
	base := loopbackURL(b.apiURL)
	id, err := b.cfg.Dev.StartIdentity(base+devIdPPath, b.now, base+"/auth/callback")
	if err != nil {
		return err
	}
	b.devIdP, b.identity, b.devUsers = id.Handler, id.Config, id.Users
	return nil
}

// writeDevFiles writes join.json for agents and cli.json (0600) for the CLI.
func (b *Broker) writeDevFiles() error {
	if err := config.Write(filepath.Join(b.cfg.DataDir, "join.json"), b.Join(), 0o600); err != nil {
		return err
	}
	// A login made with 'broker login' stays: after a restart it fails
	// with a clear 401 rather than silently turning into the bootstrap
	// admin.
	path := filepath.Join(b.cfg.DataDir, "cli.json")
	var prev config.CLI
	if config.Load(path, &prev) != nil {
		prev = config.CLI{}
	}
	return config.Write(path, config.CLI{APIURL: loopbackURL(b.apiURL), Token: b.devAdminToken, Login: prev.Login}, 0o600)
}
