package broker

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
)

// openAPIDoc is the broker API's OpenAPI 3.1 document, generated from the
// authorization table and the brokerapi types by TestOpenAPIUpToDate
// ('go test ./internal/broker -run TestOpenAPIUpToDate -update' rewrites
// it) and committed.
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPIDocument returns the committed OpenAPI document as generated,
// before the broker puts its version in it.
func OpenAPIDocument() []byte { return openAPIDoc }

// openAPIFor returns the document with info.version set to version, the
// broker's build: decoded and encoded once per broker.
func openAPIFor(version string) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		return nil, fmt.Errorf("decode the embedded OpenAPI document: %w", err)
	}
	info, ok := doc["info"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the embedded OpenAPI document has no info object")
	}
	info["version"] = version
	return json.Marshal(doc)
}

// openAPIServed caches the served document by version: a process holds
// one broker in production, several in tests.
var openAPIServed sync.Map // version → []byte

// handleOpenAPI serves the API's OpenAPI document. It needs no
// credentials: it describes routes, roles and types, which the public
// docs/api.md says too, and holds no secret, tenant or deployment.
func (b *Broker) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	body, ok := openAPIServed.Load(b.cfg.Version)
	if !ok {
		doc, err := openAPIFor(b.cfg.Version)
		if err != nil {
			return err
		}
		body, _ = openAPIServed.LoadOrStore(b.cfg.Version, doc)
	}
	w.Header().Set("Content-Type", "application/json")
	// The document changes only with the broker's build.
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(body.([]byte))
	return nil
}
