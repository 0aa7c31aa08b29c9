package kube

import (
	"context"
	"errors"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/trireme-csi/trireme/internal/kubetest"
)

func TestLeaderAddress(t *testing.T) {
	id := Identity("127.0.0.21:7700")
	if got := LeaderAddress(id); got != "127.0.0.21:7700" {
		t.Errorf("LeaderAddress(%q) = %q", id, got)
	}
	if Identity("a:1") == Identity("a:1") {
		t.Error("two identities of one address are equal; a restarted replica would inherit the lease")
	}
	for _, holder := range []string{"", "no-address"} {
		if got := LeaderAddress(holder); got != "" {
			t.Errorf("LeaderAddress(%q) = %q, want empty", holder, got)
		}
	}
	if got := LeaderAddress(Identity("[::1]:7700")); got != "[::1]:7700" {
		t.Errorf("IPv6 address came back as %q", got)
	}
}

func startCluster(t *testing.T) *kubetest.ControlPlane {
	t.Helper()
	return kubetest.Start(t, kubetest.Options{})
}

func clientOf(t *testing.T, cp *kubetest.ControlPlane) kubernetes.Interface {
	t.Helper()
	cfg := cp.RESTConfig()
	cfg.QPS, cfg.Burst = clientQPS, clientBurst
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// candidate runs RunLeader in the background; leading receives once it
// leads, and result its return value.
type candidate struct {
	cancel  context.CancelFunc
	leading chan struct{}
	result  chan error
}

func runCandidate(t *testing.T, client kubernetes.Interface, addr string, lease time.Duration) *candidate {
	ctx, cancel := context.WithCancel(t.Context())
	c := &candidate{cancel: cancel, leading: make(chan struct{}), result: make(chan error, 1)}
	o := LeaderOptions{Client: client, Namespace: "default", Name: "trireme-test", Address: addr,
		LeaseDuration: lease, RenewDeadline: lease * 2 / 3, RetryPeriod: lease / 10}
	go func() {
		c.result <- RunLeader(ctx, o, func(ctx context.Context) error {
			close(c.leading)
			<-ctx.Done()
			return nil
		})
	}()
	t.Cleanup(cancel)
	return c
}

func waitFor(t *testing.T, what string, ch <-chan struct{}, d time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
	}
}

func holder(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	l, err := client.CoordinationV1().Leases("default").Get(t.Context(), "trireme-test", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// TestLeaderHandsOverOnShutdown: one of two candidates leads; when it
// shuts down it releases the Lease and the other leads at once, well
// within the lease duration.
func TestLeaderHandsOverOnShutdown(t *testing.T) {
	client := clientOf(t, startCluster(t))
	const lease = 6 * time.Second
	a := runCandidate(t, client, "127.0.0.21:7700", lease)
	waitFor(t, "first candidate leads", a.leading, lease)
	b := runCandidate(t, client, "127.0.0.22:7700", lease)
	time.Sleep(lease / 5)
	select {
	case <-b.leading:
		t.Fatal("second candidate leads while the first holds the lease")
	default:
	}
	if got := LeaderAddress(holder(t, client)); got != "127.0.0.21:7700" {
		t.Errorf("lease names %q, want the first candidate", got)
	}

	start := time.Now()
	a.cancel()
	if err := <-a.result; err != nil {
		t.Errorf("first candidate: RunLeader = %v, want nil", err)
	}
	waitFor(t, "second candidate leads", b.leading, lease)
	if took := time.Since(start); took > lease/2 {
		t.Errorf("hand-over took %v; a released lease should go at the next retry", took)
	}
	if got := LeaderAddress(holder(t, client)); got != "127.0.0.22:7700" {
		t.Errorf("lease names %q, want the second candidate", got)
	}
}

// TestLeaderTakesOverFromDeadHolder: a Lease held by a replica that
// stopped renewing is taken over once it expires, not before.
func TestLeaderTakesOverFromDeadHolder(t *testing.T) {
	client := clientOf(t, startCluster(t))
	const lease = 4 * time.Second
	now := metav1.NewMicroTime(time.Now())
	_, err := client.CoordinationV1().Leases("default").Create(t.Context(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "trireme-test"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(Identity("127.0.0.9:7700")),
			LeaseDurationSeconds: ptr.To(int32(lease / time.Second)), AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c := runCandidate(t, client, "127.0.0.23:7700", lease)
	waitFor(t, "candidate leads", c.leading, 3*lease)
	if took := time.Since(start); took < lease*3/4 {
		t.Errorf("took over after %v, before the dead holder's lease of %v expired", took, lease)
	}
}

// TestRunLeaderStandbyCanceled: a candidate canceled before it leads
// returns nil and never called lead.
func TestRunLeaderStandbyCanceled(t *testing.T) {
	client := clientOf(t, startCluster(t))
	a := runCandidate(t, client, "127.0.0.21:7700", 6*time.Second)
	waitFor(t, "first candidate leads", a.leading, 6*time.Second)
	b := runCandidate(t, client, "127.0.0.22:7700", 6*time.Second)
	time.Sleep(time.Second)
	b.cancel()
	if err := <-b.result; err != nil || errors.Is(err, ErrLeadershipLost) {
		t.Errorf("standby: RunLeader = %v, want nil", err)
	}
	select {
	case <-b.leading:
		t.Error("standby led")
	default:
	}
}

// TestLeaderStolenLeaseIsLost: a leader whose Lease another holder
// overwrote stops with ErrLeadershipLost within the renew deadline, and
// its lead context ends.
func TestLeaderStolenLeaseIsLost(t *testing.T) {
	client := clientOf(t, startCluster(t))
	const lease = 6 * time.Second
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	leading, leadEnded := make(chan struct{}), make(chan struct{})
	result := make(chan error, 1)
	o := LeaderOptions{Client: client, Namespace: "default", Name: "trireme-test", Address: "127.0.0.21:7700",
		LeaseDuration: lease, RenewDeadline: lease / 2, RetryPeriod: lease / 12}
	go func() {
		result <- RunLeader(ctx, o, func(ctx context.Context) error {
			close(leading)
			<-ctx.Done()
			close(leadEnded)
			return nil
		})
	}()
	waitFor(t, "candidate leads", leading, lease)

	err := retry.RetryOnConflict(retry.DefaultRetry, func() error { // the leader renews meanwhile
		l, err := client.CoordinationV1().Leases("default").Get(t.Context(), "trireme-test", metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.NewMicroTime(time.Now().Add(time.Hour))
		l.Spec.HolderIdentity, l.Spec.RenewTime = ptr.To(Identity("127.0.0.9:7700")), &now
		_, err = client.CoordinationV1().Leases("default").Update(t.Context(), l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if !errors.Is(err, ErrLeadershipLost) {
			t.Errorf("RunLeader = %v, want %v", err, ErrLeadershipLost)
		}
	case <-time.After(2 * lease):
		t.Fatal("RunLeader still runs after its lease was taken")
	}
	waitFor(t, "lead context ends", leadEnded, time.Second)
}
