package netlimit

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestPerAddrCountsEachAddressAgainstTheLimit(t *testing.T) {
	p := NewPerAddr(2)
	a1, a2 := fakeConn("127.0.0.5:1000"), fakeConn("127.0.0.5:1001")
	first, ok1 := p.Acquire(a1)
	_, ok2 := p.Acquire(a2)
	_, ok3 := p.Acquire(fakeConn("127.0.0.5:1002"))
	_, other := p.Acquire(fakeConn("127.0.0.6:1000"))
	if !ok1 || !ok2 || ok3 || !other {
		t.Fatalf("acquired %v %v %v, other address %v; want true true false, true", ok1, ok2, ok3, other)
	}
	p.Release(first)
	if _, ok := p.Acquire(fakeConn("127.0.0.5:1003")); !ok {
		t.Fatal("refused after a release")
	}
	if n := p.Count(first); n != 2 {
		t.Fatalf("count %d, want 2", n)
	}
}

func TestPerAddrWithoutALimitCountsNothing(t *testing.T) {
	p := NewPerAddr(0)
	for range 100 {
		addr, ok := p.Acquire(fakeConn("127.0.0.5:1000"))
		if !ok || addr.IsValid() {
			t.Fatalf("acquire: %v %v", addr, ok)
		}
	}
}

// TestListenerClosesConnectionsOverTheLimit: the third connection from
// one address is closed at once; closing one admitted connection makes
// room again.
func TestListenerClosesConnectionsOverTheLimit(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(raw, 2, "test")
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	first, second := <-accepted, <-accepted
	defer second.Close()
	clients[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := clients[2].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("third connection: read %v, want EOF (closed by the server)", err)
	}
	first.Close()
	again, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no room after an admitted connection closed")
	}
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func fakeConn(addr string) net.Conn {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		panic(err)
	}
	return addrConn{remote: a}
}
