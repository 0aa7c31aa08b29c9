package api

// ZoneTopologyKey is the well-known Kubernetes label of a node's
// availability zone. Node agents report their zone under it, and it is the
// default failure domain replicas are spread over.
const ZoneTopologyKey = "topology.kubernetes.io/zone"
