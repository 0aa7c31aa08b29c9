// Package controller is Trireme's control plane: node membership, replica
// placement, the life cycle of volumes and their attachments, and the
// layout changes the data plane reports (replica faults and completed
// copies). Volume and node records live in a store.Store; node liveness
// (heartbeat age and free space) lives in memory only, since it is stale
// the moment the controller restarts anyway.
//
// The package knows nothing of gRPC status codes: it returns the sentinel
// errors of errors.go, wrapped with context, and the RPC edges choose the
// codes.
package controller

import (
	"io"
	"sync"
	"time"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/store"
)

// Defaults of Options.
const (
	DefaultHeartbeatTimeout = 2 * time.Second
	DefaultNodeCallTimeout  = 10 * time.Second
	DefaultPushTimeout      = 2 * time.Second
)

// NodeDialer returns a client of the Node service of node nodeID at its
// agent's API address (host:port). With TLS the client must accept only
// that node's certificate: a node could register another's address.
type NodeDialer func(nodeID, apiAddress string) (apiv1.NodeClient, error)

// Options configure a Controller.
type Options struct {
	// Store holds volume and node records. Required.
	Store store.Store
	// DialNode connects to node agents. Nil dials them over plain TCP.
	DialNode NodeDialer
	// HeartbeatTimeout is how old a node's last heartbeat may be for the
	// node to count as live. Zero means DefaultHeartbeatTimeout.
	HeartbeatTimeout time.Duration
	// NodeCallTimeout bounds each call to a node while creating or
	// deleting a volume. Zero means DefaultNodeCallTimeout.
	NodeCallTimeout time.Duration
	// PushTimeout bounds each best-effort push of a new layout to the
	// replica nodes after a report. Zero means DefaultPushTimeout.
	PushTimeout time.Duration
	// Now tells the time; nil means time.Now. Tests set it.
	Now func() time.Time
	// StartupGrace is how long after this controller starts a node that
	// has not registered with it still counts as alive: a restarted or
	// newly elected controller gives node agents that long to find it.
	// Zero means three heartbeat timeouts.
	StartupGrace time.Duration
	// RepairInterval is how often Run looks at every volume. Zero means
	// DefaultRepairInterval.
	RepairInterval time.Duration
	// ResumeWindow is how long a Faulted replica may stay away and still
	// come back by catching up; after it, the replica is removed from the
	// layout. Zero means DefaultResumeWindow.
	ResumeWindow time.Duration
	// Events receives volume events; nil drops them.
	Events EventSink
}

func (o *Options) defaults() {
	if o.DialNode == nil {
		o.DialNode = dialNode
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if o.NodeCallTimeout == 0 {
		o.NodeCallTimeout = DefaultNodeCallTimeout
	}
	if o.PushTimeout == 0 {
		o.PushTimeout = DefaultPushTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.StartupGrace == 0 {
		o.StartupGrace = 3 * o.HeartbeatTimeout
	}
	if o.RepairInterval == 0 {
		o.RepairInterval = DefaultRepairInterval
	}
	if o.ResumeWindow == 0 {
		o.ResumeWindow = DefaultResumeWindow
	}
	if o.Events == nil {
		o.Events = noEvents{}
	}
}

func dialNode(_, addr string) (apiv1.NodeClient, error) {
	return api.DialNode(addr)
}

// Controller places and manages volumes. Its methods are safe for
// concurrent use; callers serialize operations on one volume (the CSI
// server does, with its in-flight map), and the store's compare-and-swap
// keeps concurrent layout changes from losing one another.
type Controller struct {
	opts    Options
	store   store.Store
	members *members

	started time.Time // when this process's view of membership began

	mu      sync.Mutex // guards clients, ready and the repair state below
	clients map[string]apiv1.NodeClient
	ready   map[string]bool // volumes fully provisioned by this process

	// Repair state, in memory only: a new leader starts afresh.
	confirmedEpochs map[string]confirmation // layout each volume's primary acknowledged
	faultedAt       map[replicaKey]time.Time
	resumedAt       map[replicaKey]time.Time
	logged          map[replicaKey]bool
	volumeLocks     map[string]*sync.Mutex
	repairing       map[string]bool
	creating        map[string]bool // volumes CreateVolume is provisioning
	avoidUntil      map[string]time.Time
}

// New returns a Controller over opts.Store. It does not close the store.
func New(opts Options) *Controller {
	opts.defaults()
	return &Controller{
		opts:    opts,
		store:   opts.Store,
		members: newMembers(),
		started: opts.Now(),
		clients: map[string]apiv1.NodeClient{},
		ready:   map[string]bool{},

		confirmedEpochs: map[string]confirmation{},
		faultedAt:       map[replicaKey]time.Time{},
		resumedAt:       map[replicaKey]time.Time{},
		logged:          map[replicaKey]bool{},
		volumeLocks:     map[string]*sync.Mutex{},
		repairing:       map[string]bool{},
		creating:        map[string]bool{},
		avoidUntil:      map[string]time.Time{},
	}
}

// Close releases the connections to node agents.
func (c *Controller) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, cl := range c.clients {
		if cl, ok := cl.(io.Closer); ok {
			cl.Close()
		}
		delete(c.clients, addr)
	}
	return nil
}
