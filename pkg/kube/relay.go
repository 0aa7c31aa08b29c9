package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// relayDialTimeout bounds the connection to the leader for one client.
const relayDialTimeout = 3 * time.Second

// Relay forwards TCP connections on a loopback port to the controller
// that holds a Lease, and follows the Lease: when the holder changes it
// drops the connections it forwards, so that their gRPC clients connect
// again, to the new leader. A node agent points its controller address
// at Addr, and needs no Service: it works where no cluster network
// routes Service IPs, and in a cluster alike.
type Relay struct {
	lis    net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	target string                // leader's address; "" while unknown
	conns  map[net.Conn]struct{} // clients being forwarded
}

// FollowLeader starts a Relay on 127.0.0.1 for the Lease namespace/name,
// whose holder identities are made by Identity. It watches the Lease
// until Close.
func FollowLeader(client kubernetes.Interface, namespace, name string) (*Relay, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("leader relay: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{lis: lis, cancel: cancel, conns: map[net.Conn]struct{}{}}
	r.watch(ctx, client, namespace, name)
	r.wg.Go(r.serve)
	klog.InfoS("Following the controller's lease", "lease", namespace+"/"+name, "relay", lis.Addr())
	return r, nil
}

// Addr is the relay's host:port.
func (r *Relay) Addr() string { return r.lis.Addr().String() }

// Close stops the relay and drops every forwarded connection.
func (r *Relay) Close() error {
	r.cancel()
	err := r.lis.Close()
	r.setTarget("")
	r.wg.Wait()
	return err
}

// watch runs an informer on the one Lease.
func (r *Relay) watch(ctx context.Context, client kubernetes.Interface, namespace, name string) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := f.Coordination().V1().Leases().Informer()
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.observe(obj) },
		UpdateFunc: func(_, obj any) { r.observe(obj) },
		DeleteFunc: func(any) { r.setTarget("") },
	})
	f.Start(ctx.Done())
}

func (r *Relay) observe(obj any) {
	lease, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	r.setTarget(LeaderAddress(holder))
}

// setTarget points the relay at addr, dropping the connections to the
// previous leader.
func (r *Relay) setTarget(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if addr == r.target {
		return
	}
	klog.InfoS("Controller leader changed", "from", r.target, "to", addr, "dropping", len(r.conns))
	r.target = addr
	for c := range r.conns {
		c.Close()
		delete(r.conns, c)
	}
}

func (r *Relay) serve() {
	for {
		c, err := r.lis.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			klog.ErrorS(err, "Leader relay accept failed")
			time.Sleep(100 * time.Millisecond)
			continue
		}
		r.wg.Go(func() { r.forward(c) })
	}
}

// forward copies between a client and the current leader until either
// side closes, or the leader changes.
func (r *Relay) forward(client net.Conn) {
	r.mu.Lock()
	target := r.target
	r.mu.Unlock()
	if target == "" {
		client.Close()
		return
	}
	leader, err := net.DialTimeout("tcp", target, relayDialTimeout)
	if err != nil {
		klog.V(2).InfoS("Leader relay could not reach the leader", "leader", target, "err", err)
		client.Close()
		return
	}
	if !r.track(target, client, leader) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(leader, client); done <- struct{}{} }()
	go func() { io.Copy(client, leader); done <- struct{}{} }()
	<-done
	client.Close()
	leader.Close()
	<-done
	r.mu.Lock()
	delete(r.conns, client)
	delete(r.conns, leader)
	r.mu.Unlock()
}

// track registers a forwarded pair, unless the leader changed while it
// was dialed.
func (r *Relay) track(target string, client, leader net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.target != target {
		client.Close()
		leader.Close()
		return false
	}
	r.conns[client] = struct{}{}
	r.conns[leader] = struct{}{}
	return true
}
