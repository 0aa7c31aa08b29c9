// Package api holds what both ends of Trireme's internal gRPC API share:
// clients for the Node and Controller services, conversions between the
// protobuf messages in package apiv1 and the replication types, the volume
// id rule, and the operator's table of a node's volumes.
//
// Connections are plain TCP without authentication; the API must only be
// reachable from the cluster's own network until TLS is added.
package api
