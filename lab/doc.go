// Package lab holds the network lab tests of issue 4 (DESIGN §2 N1–N8, §6): the real chatd binary in
// a server network namespace, clients in a client namespace, and a middlebox between them that
// applies real faults with nftables, conntrack, tc netem, nginx and squid (internal/netlab). They
// need root; `go test ./lab/` skips them without it, and fails instead when CI is set.
package lab
