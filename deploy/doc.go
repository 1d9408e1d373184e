// Package deploy holds the tests of what an operator applies to run
// Tether: the Helm charts under helm/, the Dockerfiles under docker/ and
// the ClickHouse user under clickhouse/. It is a Go module of its own so
// that the Helm and Kubernetes libraries the tests need stay out of the
// product's module; it has no code of its own.
package deploy
