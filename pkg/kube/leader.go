package kube

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// ErrLeadershipLost means the controller could not renew its Lease in
// time: another replica may lead already. The process must stop at once,
// without waiting for in-flight calls.
var ErrLeadershipLost = errors.New("leadership lost: the lease was not renewed in time")

// Defaults of LeaderOptions, those of Kubernetes' own controllers.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
	// DefaultLeaseName names the controller's Lease.
	DefaultLeaseName = "trireme-controller"
)

// LeaderOptions configure RunLeader.
type LeaderOptions struct {
	Client    kubernetes.Interface
	Namespace string
	// Name is the Lease's name.
	Name string
	// Address is host:port of this replica's internal API. It leads the
	// Lease's holder identity, so that node agents find the leader.
	Address string
	// LeaseDuration is how long the others wait after the last renewal
	// before they take over; RenewDeadline how long the leader keeps
	// trying to renew before it gives up (shorter, so that it stops
	// before anyone else starts); RetryPeriod how often everyone tries.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// Identity returns the Lease holder identity of a replica serving its
// internal API at address: the address, a slash, the host name and a
// random suffix, so that a restarted replica is a new candidate.
func Identity(address string) string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return address + "/" + host + "-" + hex.EncodeToString(b[:])
}

// LeaderAddress returns the internal API address in a holder identity
// made by Identity, or "" if there is none.
func LeaderAddress(holder string) string {
	addr, _, ok := strings.Cut(holder, "/")
	if !ok {
		return ""
	}
	return addr
}

// RunLeader waits until this replica holds the Lease, then calls lead
// with a context that ends when leadership does, and keeps renewing.
//
// When ctx ends, RunLeader cancels lead's context, waits for lead to
// return, and only then releases the Lease, so that no two replicas lead
// at once; it returns nil. If a renewal fails instead, it returns
// ErrLeadershipLost at once, while lead may still run: the caller must
// exit the process. If lead returns by itself, RunLeader releases the
// Lease and returns lead's error.
func RunLeader(ctx context.Context, o LeaderOptions, lead func(context.Context) error) error {
	o.defaults()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name},
		Client:     o.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: Identity(o.Address)},
	}
	electCtx, stopElecting := context.WithCancel(ctx)
	defer stopElecting()
	done := make(chan struct{})
	var leadErr error
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, Name: o.Name,
		LeaseDuration: o.LeaseDuration, RenewDeadline: o.RenewDeadline, RetryPeriod: o.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				defer close(done)
				klog.InfoS("Leading", "lease", o.Namespace+"/"+o.Name, "identity", lock.Identity())
				leadErr = lead(ctx)
				stopElecting()
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				klog.InfoS("Leader observed", "lease", o.Namespace+"/"+o.Name, "leader", id, "address", LeaderAddress(id))
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	klog.InfoS("Waiting to lead", "lease", o.Namespace+"/"+o.Name, "identity", lock.Identity())
	le.Run(electCtx)

	// Run returns before its context ends only when a renewal failed.
	if electCtx.Err() == nil {
		return ErrLeadershipLost
	}
	// Otherwise ctx ended or lead returned. The record Run saw last is
	// still this replica's if it had won, and then lead runs or ran.
	if !le.IsLeader() {
		return nil
	}
	<-done
	release(lock)
	return leadErr
}

// release gives up the Lease, if this replica still holds it, so that
// another takes over without waiting for it to expire.
func release(lock *resourcelock.LeaseLock) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRenewDeadline)
	defer cancel()
	rec, _, err := lock.Get(ctx)
	if err != nil || rec.HolderIdentity != lock.Identity() {
		return
	}
	now := metav1.Now()
	err = lock.Update(ctx, resourcelock.LeaderElectionRecord{
		LeaderTransitions: rec.LeaderTransitions, LeaseDurationSeconds: 1, RenewTime: now, AcquireTime: now,
	})
	if err != nil {
		klog.ErrorS(err, "Releasing the lease failed; another replica takes over when it expires")
		return
	}
	klog.InfoS("Released the lease", "identity", lock.Identity())
}

func (o *LeaderOptions) defaults() {
	if o.LeaseDuration == 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.RenewDeadline == 0 {
		o.RenewDeadline = DefaultRenewDeadline
	}
	if o.RetryPeriod == 0 {
		o.RetryPeriod = DefaultRetryPeriod
	}
	if o.Name == "" {
		o.Name = DefaultLeaseName
	}
}
