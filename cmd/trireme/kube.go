package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/agent"
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/kube"
	"github.com/trireme-csi/trireme/pkg/store"
	"github.com/trireme-csi/trireme/pkg/store/bolt"
	storekube "github.com/trireme-csi/trireme/pkg/store/kube"
)

// Stores the controller can keep its records in.
const (
	storeBolt = "bolt"
	storeKube = "kube"
)

// startTimeout bounds the API calls made while a process starts.
const startTimeout = 30 * time.Second

// leaseFlags name the controller's Lease; the controller and the node
// agents take the same ones.
type leaseFlags struct {
	namespace, name string
}

func addLeaseFlags(fs *flag.FlagSet) *leaseFlags {
	l := &leaseFlags{}
	fs.StringVar(&l.namespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the controller's Lease (default: env POD_NAMESPACE)")
	fs.StringVar(&l.name, "leader-election-id", kube.DefaultLeaseName, "name of the controller's Lease")
	return l
}

// controllerKube holds the controller's flags about the store and
// leadership.
type controllerKube struct {
	store      string
	kubeconfig string
	elect      bool
	lease      *leaseFlags
	advertise  string
	durations  kube.LeaderOptions // the three durations only

	cfg *rest.Config // set by openStore when Kubernetes is used
}

func addControllerKubeFlags(fs *flag.FlagSet) *controllerKube {
	k := &controllerKube{}
	fs.StringVar(&k.store, "store", storeBolt, "where volume records live: bolt (the --db file) or kube (trireme.dev custom resources)")
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (empty: the pod's in-cluster configuration)")
	fs.BoolVar(&k.elect, "leader-elect", false, "run as one of several replicas: only the holder of the Lease serves (needs --store=kube)")
	k.lease = addLeaseFlags(fs)
	fs.StringVar(&k.advertise, "advertise-address", "", "host node agents reach the internal API at, published in the Lease (default: --listen-address)")
	fs.DurationVar(&k.durations.LeaseDuration, "leader-election-lease-duration", kube.DefaultLeaseDuration, "how long standby replicas wait after the leader's last renewal before taking over")
	fs.DurationVar(&k.durations.RenewDeadline, "leader-election-renew-deadline", kube.DefaultRenewDeadline, "how long the leader tries to renew before it stops leading")
	fs.DurationVar(&k.durations.RetryPeriod, "leader-election-retry-period", kube.DefaultRetryPeriod, "how often replicas try to acquire or renew the Lease")
	return k
}

// openStore opens the store the flags name, and with the kube store also
// sets opts.Events.
func (k *controllerKube) openStore(db string, opts *controller.Options) (store.Store, error) {
	switch {
	case k.store == storeBolt && k.elect:
		return nil, errors.New("--leader-elect needs --store=kube: every replica must see the same records")
	case k.store == storeBolt:
		if err := os.MkdirAll(filepath.Dir(db), 0o700); err != nil {
			return nil, err
		}
		return bolt.Open(db, bolt.Options{})
	case k.store != storeKube:
		return nil, fmt.Errorf("--store=%q: want %s or %s", k.store, storeBolt, storeKube)
	}
	cfg, err := kube.Config(k.kubeconfig)
	if err != nil {
		return nil, err
	}
	k.cfg = cfg
	s, err := storekube.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.Check(ctx); err != nil {
		return nil, err
	}
	if opts.Events, err = newEvents(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

func newEvents(cfg *rest.Config) (*kube.Events, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return kube.NewEvents(client, dyn), nil
}

// closeEvents flushes the events of a kube store's controller.
func closeEvents(opts controller.Options) {
	if e, ok := opts.Events.(*kube.Events); ok {
		e.Close()
	}
}

// run calls serve at once, or with --leader-elect once this replica
// leads. listen and port are those of the internal API.
func (k *controllerKube) run(ctx context.Context, listen string, port int, serve func(context.Context) error) error {
	if !k.elect {
		return serve(ctx)
	}
	host := k.advertise
	if host == "" {
		host = listen
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("--advertise-address is required when --listen-address is %s: node agents must reach the leader", listen)
	}
	if k.lease.namespace == "" {
		return errors.New("--leader-elect needs --leader-election-namespace or env POD_NAMESPACE")
	}
	client, err := kubernetes.NewForConfig(k.cfg)
	if err != nil {
		return err
	}
	o := k.durations
	o.Client, o.Namespace, o.Name = client, k.lease.namespace, k.lease.name
	o.Address = net.JoinHostPort(host, strconv.Itoa(port))
	return kube.RunLeader(ctx, o, serve)
}

// nodeKube holds the node agent's flags about Kubernetes.
type nodeKube struct {
	kubeconfig string
	lease      *leaseFlags
}

func addNodeKubeFlags(fs *flag.FlagSet) *nodeKube {
	k := &nodeKube{}
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the in-cluster configuration when in a pod, else no Kubernetes")
	k.lease = addLeaseFlags(fs)
	return k
}

// apply fills in what cfg leaves out from Kubernetes: the node id from
// env NODE_NAME, the zone from the Node object's label, and the
// controller address from a relay that follows the controller's Lease.
// The returned function stops the relay.
func (k *nodeKube) apply(cfg *agent.Config) (func(), error) {
	if cfg.NodeID == "" {
		cfg.NodeID = os.Getenv("NODE_NAME")
	}
	if k.kubeconfig == "" && !kube.InCluster() {
		return func() {}, nil
	}
	rc, err := kube.Config(k.kubeconfig)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	if cfg.Zone == "" && cfg.NodeID != "" {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if cfg.Zone, err = kube.NodeZone(ctx, client, cfg.NodeID); err != nil {
			return nil, err
		}
		klog.InfoS("Zone from the Node object", "node", cfg.NodeID, "zone", cfg.Zone)
	}
	if cfg.ControllerAddress != "" {
		return func() {}, nil
	}
	if k.lease.namespace == "" {
		return nil, errors.New("no --controller: set --leader-election-namespace or env POD_NAMESPACE to follow the controller's Lease")
	}
	r, err := kube.FollowLeader(client, k.lease.namespace, k.lease.name)
	if err != nil {
		return nil, err
	}
	cfg.ControllerAddress = r.Addr()
	return func() { r.Close() }, nil
}
