package controller

import "errors"

// Errors returned by the Controller. The RPC edges (package csi and the
// internal API server) turn each into one gRPC status code; this package
// chooses none.
var (
	// ErrInvalid means a request is malformed whatever the cluster's state.
	ErrInvalid = errors.New("invalid request")
	// ErrVolumeNotFound means no volume has the id.
	ErrVolumeNotFound = errors.New("volume not found")
	// ErrNodeNotFound means no node with the id has registered.
	ErrNodeNotFound = errors.New("node not found")
	// ErrAlreadyExistsDifferent means a volume with the name exists but
	// was created with another size, capability or parameter.
	ErrAlreadyExistsDifferent = errors.New("volume exists with different properties")
	// ErrNoPlacement means the live nodes cannot hold the replicas the
	// request asks for: too few nodes, or too little free space on them.
	ErrNoPlacement = errors.New("no placement satisfies the request")
	// ErrCapacityOutOfRange means no node could ever hold one replica of
	// the requested size.
	ErrCapacityOutOfRange = errors.New("capacity beyond what any node holds")
	// ErrPublishedElsewhere means a single-node volume is already
	// published to another node.
	ErrPublishedElsewhere = errors.New("volume is published to another node")
	// ErrVolumeInUse means the volume is still published to a node.
	ErrVolumeInUse = errors.New("volume is in use")
	// ErrNodeUnavailable means a node the operation needs did not answer.
	ErrNodeUnavailable = errors.New("node unavailable")
	// ErrInvalidReport means a replica report does not fit the volume:
	// the replica is not in its layout, or is its primary.
	ErrInvalidReport = errors.New("report does not fit the volume")
	// ErrBusy means another call is working on the volume; retry later.
	ErrBusy = errors.New("operation in progress")
	// ErrAddressInUse means a node registered an address another live
	// node holds.
	ErrAddressInUse = errors.New("address registered by another live node")
	// ErrEpochAhead means a report carries an epoch the controller never
	// handed out.
	ErrEpochAhead = errors.New("report epoch is newer than the volume record")
)
