// Package guardrails holds tests that keep the codebase's rules: every
// package documented, and no test code or dev preset (dev tailnet, dev
// identity provider, httptest) linked into the production binaries. It
// has no non-test code.
package guardrails
