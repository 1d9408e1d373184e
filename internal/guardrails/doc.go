// Package guardrails holds tests that keep the codebase's rules: every
// package documented, no test code linked into the binaries, and the
// agent free of the dev tailnet's servers. It has no non-test code.
package guardrails
