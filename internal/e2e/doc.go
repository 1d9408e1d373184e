// Package e2e holds Tether's end-to-end tests: they build the real broker
// and agent binaries and run them as separate processes over the broker's
// dev tailnet (real control server, DERP relay and WireGuard), as a user
// would. It has no non-test code.
package e2e
