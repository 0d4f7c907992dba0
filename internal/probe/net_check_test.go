package probe

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-ci/berth/internal/faultnet"
)

// Fixtures of the checker tests: real sockets on 127.0.0.1 that refuse,
// black-hole or never answer, a resolver with a scripted answer, and the
// way tests end a probe "by timeout" at the moment they choose.

// wantResult fails t unless res has the given verdict and its message
// contains every one of parts.
func wantResult(t *testing.T, res Result, ok bool, reason Reason, parts ...string) {
	t.Helper()
	t.Logf("probe result: %s %q", res.Reason, res.Message)
	if res.OK != ok || res.Reason != reason {
		t.Fatalf("got %+v; want OK=%v reason %q", res, ok, reason)
	}
	for _, p := range parts {
		if !strings.Contains(res.Message, p) {
			t.Fatalf("message %q does not contain %q", res.Message, p)
		}
	}
}

func compileOK(t *testing.T, s Spec, env Env) Checker {
	t.Helper()
	c, err := Compile(s, env)
	if err != nil {
		t.Fatalf("Compile(%+v): %v", s, err)
	}
	return c
}

// timeoutWhen returns a probe context that the test ends with cause
// ErrTimeout as soon as ready is closed: the probe's timeout fires at a
// point the test chose, not when a real clock says so.
func timeoutWhen(t *testing.T, ready <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ready:
			cancel(ErrTimeout)
		case <-ctx.Done():
		}
	}()
	t.Cleanup(func() {
		cancel(errors.New("test over"))
		<-done
	})
	return ctx
}

// signalDial is an Env whose default dialer closes dialing when the first
// dial starts.
func signalDial(dialing chan struct{}) Env {
	var once sync.Once
	return Env{Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		once.Do(func() { close(dialing) })
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}}
}

// closedPort returns an address on 127.0.0.1 where nothing listens: a
// port held by a socket that is bound but not listening (faultnet), so
// that no other listener, of this test binary or any other process, can
// take it while the test expects it refused.
func closedPort(t *testing.T) string {
	t.Helper()
	l := faultnet.ListenTest(t)
	takeDown(t, l)
	return l.Addr()
}

// takeDown takes l down; faultnet waits until the kernel has no
// listening socket on its port any more.
func takeDown(t *testing.T, l *faultnet.Listener) {
	t.Helper()
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
}

// blackHole returns an address whose SYNs are dropped, as a firewall
// dropping packets does: a listener with an accept queue of one entry,
// filled by a connection never accepted. Linux drops a SYN to a listener
// whose accept queue is full.
func blackHole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	filler, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = filler.Close() })
	// The filler's connect returns on the SYN-ACK; it is in the accept
	// queue once the kernel has taken its ACK, which on loopback is a
	// matter of microseconds. TCP_INFO of a listener reports the queue's
	// length in tcpi_unacked.
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		if info.Unacked >= 1 {
			return addr
		}
		runtime.Gosched()
	}
}

// silentServer accepts connections and reads what comes, never answering.
// It closes got once a connection's bytes end with until: "" for the first
// byte (a ClientHello), "\r\n\r\n" for the end of an HTTP request's
// headers.
func silentServer(t *testing.T, until string) (addr string, got <-chan struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				r := bufio.NewReader(c)
				var seen strings.Builder
				for {
					b, err := r.ReadByte()
					if err != nil {
						return
					}
					seen.WriteByte(b)
					if strings.HasSuffix(seen.String(), until) {
						once.Do(func() { close(ch) })
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String(), ch
}

// fakeResolver is a Go resolver that asks a DNS server of the test's own
// over an in-memory connection: rcode 3 (NXDOMAIN) for every question, or,
// with dialErr set, no server at all.
func fakeResolver(t *testing.T, dialErr error) *net.Resolver {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			if dialErr != nil {
				return nil, dialErr
			}
			client, server := net.Pipe()
			wg.Go(func() { serveNXDOMAIN(server) })
			return client, nil
		},
	}
}

// serveNXDOMAIN answers every query on c with NXDOMAIN. A net.Conn that is
// not a PacketConn gets DNS over TCP framing: a 2-byte length first.
func serveNXDOMAIN(c net.Conn) {
	defer func() { _ = c.Close() }()
	for {
		var n uint16
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		q := make([]byte, n)
		if _, err := io.ReadFull(c, q); err != nil || len(q) < 12 {
			return
		}
		// Header: the query's ID; QR, opcode 0, RD as asked, RA, rcode 3;
		// the question echoed back, no answers.
		resp := append([]byte(nil), q...)
		resp[2] = 0x80 | q[2]&0x01
		resp[3] = 0x80 | 3
		binary.BigEndian.PutUint16(resp[6:], 0)  // ANCOUNT
		binary.BigEndian.PutUint16(resp[8:], 0)  // NSCOUNT
		binary.BigEndian.PutUint16(resp[10:], 0) // ARCOUNT
		resp = resp[:12+questionLen(q[12:])]
		var out []byte
		out = binary.BigEndian.AppendUint16(out, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

// questionLen is the length of the first question in b: a name as labels,
// then type and class.
func questionLen(b []byte) int {
	i := 0
	for i < len(b) && b[i] != 0 {
		i += int(b[i]) + 1
	}
	return min(i+1+4, len(b))
}

// discardLog is a server's error log for tests that provoke the errors.
func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }
