package brokercli

import (
	"testing"

	"github.com/tetherhq/tether/internal/config"
)

// TestExampleServerConfig: the example config an operator starts from
// loads and its identity section is valid.
func TestExampleServerConfig(t *testing.T) {
	var f serverConfig
	if err := config.Load("../../deploy/broker.example.json", &f); err != nil {
		t.Fatalf("load example: %v", err)
	}
	if f.Identity == nil {
		t.Fatal("example has no identity section")
	}
	if err := f.Identity.Validate(); err != nil {
		t.Errorf("example identity: %v", err)
	}
	if f.AdminToken != "" {
		t.Error("example still sets admin_token, which serve refuses")
	}
}
