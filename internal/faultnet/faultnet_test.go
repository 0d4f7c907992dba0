package faultnet

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func dial(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

// Down refuses connections and keeps the port from other listeners; Up
// listens on it again.
func TestListenerDownAndUp(t *testing.T) {
	l, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := dial(l.Addr()); err != nil {
		t.Fatalf("up: %v", err)
	}
	for range 3 {
		if err := l.Down(); err != nil {
			t.Fatal(err)
		}
		if err := dial(l.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("down: %v, want connection refused", err)
		}
		if ln, err := net.Listen("tcp", l.Addr()); err == nil {
			ln.Close()
			t.Fatal("another listener took the port while it was down")
		}
		if err := l.Up(); err != nil {
			t.Fatal(err)
		}
		if err := dial(l.Addr()); err != nil {
			t.Fatalf("up again: %v", err)
		}
	}
}
