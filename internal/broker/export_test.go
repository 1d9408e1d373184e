package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/store"
)

// Test hooks. They exist only in this package's test binary: the
// production Broker exports nothing that mints a grant, calls an agent or
// writes the store past review and audit.

// IssueGrant signs g with the broker key, with no review and no audit
// event, for tests that need a grant the workflow would not issue.
func (b *Broker) IssueGrant(g grant.Grant) (string, error) { return b.issueGrant(g) }

// CallAgent makes a signed call to the deployment's agent, as the broker
// does to push a revocation.
func (b *Broker) CallAgent(ctx context.Context, deploymentID, method, requestURI string, body []byte, header http.Header) (*http.Response, error) {
	return b.callDeploymentAgent(ctx, deploymentID, method, requestURI, body, header)
}

// Store is the broker's store, for tests that inspect it or plant rows.
func (b *Broker) Store() store.Store { return b.store }

// ReloadPolicy reloads the policy directory now instead of waiting for
// the watcher.
func (b *Broker) ReloadPolicy(ctx context.Context) error {
	if b.cfg.PolicyDir == "" {
		return errors.New("the broker uses its embedded policy: there is no policy directory to reload")
	}
	return b.policy.Reload(ctx)
}

// OutstandingChallenges is how many live agent challenges the store
// holds, for every broker sharing it.
func (b *Broker) OutstandingChallenges() int {
	n, err := b.store.AgentChallenges(context.Background(), b.now())
	if err != nil {
		panic(fmt.Sprintf("count outstanding challenges: %v", err))
	}
	return n
}
