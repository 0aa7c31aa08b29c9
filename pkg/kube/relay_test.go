package kube

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// greeter answers every connection with its name and a newline, then
// keeps the connection open until the peer closes it.
func greeter(t *testing.T, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				c.Write([]byte(name + "\n"))
				c.Read(make([]byte, 1))
				c.Close()
			}()
		}
	}()
	return l.Addr().String()
}

// greeting connects through the relay and returns the first line.
func greeting(addr string) (string, net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", nil, err
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, c, err
}

// eventually retries fn until it is true or 5 seconds pass.
func eventually(t *testing.T, what string, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRelayFollowsTheLease(t *testing.T) {
	a, b := greeter(t, "a"), greeter(t, "b")
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "trireme-controller", Namespace: "trireme"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(Identity(a))},
	}
	client := fake.NewClientset(lease)
	r, err := FollowLeader(client, "trireme", "trireme-controller")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	var held net.Conn
	eventually(t, "relay reaches a", func() bool {
		line, c, err := greeting(r.Addr())
		if err == nil && line == "a\n" {
			held = c
			return true
		}
		if c != nil {
			c.Close()
		}
		return false
	})

	lease.Spec.HolderIdentity = ptr.To(Identity(b))
	if _, err := client.CoordinationV1().Leases("trireme").Update(context.Background(), lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := held.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("connection to the old leader still open after the lease changed (read %d, %v)", n, err)
	}
	eventually(t, "relay reaches b", func() bool {
		line, c, err := greeting(r.Addr())
		if c != nil {
			c.Close()
		}
		return err == nil && line == "b\n"
	})
}

func TestRelayWithoutLeaderClosesConnections(t *testing.T) {
	r, err := FollowLeader(fake.NewClientset(), "trireme", "trireme-controller")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, c, err := greeting(r.Addr())
	if c != nil {
		defer c.Close()
	}
	if err == nil {
		t.Error("relay without a leader forwarded a connection")
	}
}
