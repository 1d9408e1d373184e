package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/notify"
	"github.com/tetherhq/tether/internal/notify/smtptest"
)

// TestEmailNotifications: a broker configured with SMTP tells each
// customer's recipients of their own deployments' requests, with the
// link to the request's page, and nobody else.
func TestEmailNotifications(t *testing.T) {
	srv := smtptest.Start(t, 0)
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Email = &notify.Email{Server: srv.Addr(), From: "tether@vendor.example",
			Recipients: map[string][]string{"acme": {"sec@acme.example"}, "globex": {"it@globex.example"}}}
	})
	b.Pair(t, "acme", "prod")
	ctx := context.Background()
	ar, err := asUser(t, b, "engineer@vendor.test").CreateRequest(ctx, brokerapi.CreateAccessRequest{
		Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "merges are slow"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(srv.Mails()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no e-mail within 10s of the request")
		}
		time.Sleep(10 * time.Millisecond) // polling the server's observable state
	}
	m := srv.Mails()[0]
	if len(m.To) != 1 || m.To[0] != "sec@acme.example" {
		t.Errorf("e-mail to %v, want acme's recipient only", m.To)
	}
	if link := strings.TrimSuffix(b.APIURL(), "/") + "/ui/requests/" + ar.ID; !strings.Contains(m.Data, link) || !strings.Contains(m.Data, "merges are slow") {
		t.Errorf("e-mail = %q, want the reason and the link %s", m.Data, link)
	}
}
