// Package faultnet makes real network faults for tests: a TCP listener
// that goes down (connections refused) and comes back on the same address.
package faultnet

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Listener is a TCP listener on 127.0.0.1 that accepts connections and
// closes them at once, and that a test can take down and bring back on the
// same port. While it is down, a socket bound to the port but not
// listening holds the port (SO_REUSEPORT lets the two overlap), so that
// connections are refused and no other listener, of this test or another
// running beside it, can take the port meanwhile.
type Listener struct {
	addr string

	mu   sync.Mutex
	ln   net.Listener
	done chan struct{}
	hold int // the placeholder socket while down; -1 while up
}

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// Listen starts a Listener on a free port of 127.0.0.1.
func Listen() (*Listener, error) {
	l := &Listener{addr: "127.0.0.1:0", hold: -1}
	if err := l.listen(); err != nil {
		return nil, err
	}
	l.addr = l.ln.Addr().String()
	return l, nil
}

// Addr is the listener's host:port.
func (l *Listener) Addr() string { return l.addr }

func (l *Listener) listen() error {
	lc := net.ListenConfig{Control: reusePort}
	ln, err := lc.Listen(context.Background(), "tcp", l.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", l.addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	l.ln, l.done = ln, done
	return nil
}

// Down stops listening: connections are refused until Up.
func (l *Listener) Down() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln == nil {
		return nil
	}
	fd, err := placeholder(l.addr)
	if err != nil {
		return err
	}
	l.hold = fd
	l.ln.Close()
	<-l.done
	l.ln = nil
	return waitClosed(l.addr)
}

// waitClosed returns once no socket listens on addr. Closing a listener
// does not stop it listening while a child process, forked by this
// process and not yet at its exec, still holds the descriptor: a probe's
// connection could then still be accepted (seen 16 times in 3,000 with
// commands forked in parallel; holding syscall.ForkLock did not close the
// window). /proc/net/tcp tells when the socket has really gone.
func waitClosed(addr string) error {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return err
	}
	// 127.0.0.1:port is 0100007F:PORT there (hex, the address in host
	// byte order), and LISTEN is state 0A.
	local := fmt.Sprintf("%08X:%04X", binary.LittleEndian.Uint32(ap.IP.To4()), ap.Port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		table, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			return fmt.Errorf("read /proc/net/tcp: %w", err)
		}
		listening := false
		for _, line := range strings.Split(string(table), "\n") {
			if f := strings.Fields(line); len(f) > 3 && f[1] == local && f[3] == "0A" {
				listening = true
				break
			}
		}
		if !listening {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still listening 10s after it was closed", addr)
		}
		runtime.Gosched()
	}
}

// Up listens again on the same address.
func (l *Listener) Up() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return nil
	}
	if err := l.listen(); err != nil {
		return err
	}
	unix.Close(l.hold)
	l.hold = -1
	return nil
}

// Close stops listening and frees the port.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		l.ln.Close()
		<-l.done
		l.ln = nil
	}
	if l.hold >= 0 {
		unix.Close(l.hold)
		l.hold = -1
	}
	return nil
}

// placeholder binds a socket to addr (SO_REUSEPORT, no listen).
func placeholder(addr string) (int, error) {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("placeholder socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("placeholder socket: %w", err)
	}
	sa := &unix.SockaddrInet4{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To4())
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("hold %s: %w", addr, err)
	}
	return fd, nil
}

// ListenTest is Listen for a test: it fails tb if the listener cannot
// start, and closes the listener when tb ends.
func ListenTest(tb testing.TB) *Listener {
	tb.Helper()
	l, err := Listen()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	return l
}
