// Package security attacks a running Trireme: a controller and three node
// agents started as real processes on 127.0.0.x with mutual TLS, as
// `trireme local-cluster` runs them. Its tests try what docs/security.md
// lists (clients without a cluster certificate, certificates used beyond
// their role, a stolen frontend certificate, replayed replication frames,
// slowloris clients and a flood of half-open connections) and check that
// each is refused the expected way, that nothing was read or changed, and
// that legitimate clients keep being served.
package security
