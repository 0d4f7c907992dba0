package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/berth-ci/berth/internal/faultnet"
)

func tcpSpec(address string) Spec { return Spec{TCP: &TCPSpec{Address: address}} }

func TestTCPConnects(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	c := compileOK(t, tcpSpec("{{.UserData.host}}:"+port), Env{})
	res := c.Check(context.Background(), &Target{Name: "db-1", UserData: map[string]string{"host": "127.0.0.1"}})
	wantResult(t, res, true, "", "connected to "+l.Addr().String())
}

func TestTCPRefused(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	res := compileOK(t, tcpSpec(addr), Env{}).Check(context.Background(), &Target{Name: "db-1"})
	wantResult(t, res, false, ReasonConnectionRefused, "dial tcp "+addr+": connect: connection refused")
}

// TestTCPFlapping closes and reopens the listener on the same port between
// probes: each probe tells the truth of its moment, with no memory of the
// last one (no pooled connection, no cache).
func TestTCPFlapping(t *testing.T) {
	t.Parallel()
	l := faultnet.ListenTest(t)
	c := compileOK(t, tcpSpec(l.Addr()), Env{})
	target := &Target{Name: "db-1"}
	wantResult(t, c.Check(context.Background(), target), true, "", "connected to "+l.Addr())
	takeDown(t, l)
	wantResult(t, c.Check(context.Background(), target), false, ReasonConnectionRefused, "dial tcp "+l.Addr()+": connect: connection refused")
	if err := l.Up(); err != nil {
		t.Fatal(err)
	}
	wantResult(t, c.Check(context.Background(), target), true, "", "connected to "+l.Addr())
}

// TestTCPBlackHole: SYNs dropped, the connect hangs until the probe's
// timeout ends it.
func TestTCPBlackHole(t *testing.T) {
	t.Parallel()
	addr := blackHole(t)
	dialing := make(chan struct{})
	ctx := timeoutWhen(t, dialing)
	res := compileOK(t, tcpSpec(addr), signalDial(dialing)).Check(ctx, &Target{Name: "db-1"})
	wantResult(t, res, false, ReasonTimeout, "dial tcp "+addr+": no answer within the probe timeout")
}

// TestTCPConnectTimeout: a dial that fails with an error wrapping
// ErrTimeout, as the prober's dialer does at its connect timeout (a stub
// here; TestProberConnectTimeout tests the real one), is a Timeout.
func TestTCPConnectTimeout(t *testing.T) {
	t.Parallel()
	giveUp := make(chan struct{})
	env := Env{Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		<-giveUp
		return nil, fmt.Errorf("dial %s %s: no connection within the connect timeout of 2s: %w", network, address, ErrTimeout)
	}}
	close(giveUp)
	res := compileOK(t, tcpSpec("10.0.0.1:22"), env).Check(context.Background(), &Target{Name: "vm-1"})
	wantResult(t, res, false, ReasonTimeout, "dial tcp 10.0.0.1:22: no connection within the connect timeout of 2s")
}

func TestTCPNXDOMAIN(t *testing.T) {
	t.Parallel()
	env := Env{Resolver: fakeResolver(t, nil)}
	res := compileOK(t, tcpSpec("db.berth.test.:5432"), env).Check(context.Background(), &Target{Name: "db-1"})
	wantResult(t, res, false, ReasonDNSError, "lookup db.berth.test.", "no such host")
}

func TestTCPResolverUnreachable(t *testing.T) {
	t.Parallel()
	env := Env{Resolver: fakeResolver(t, &net.OpError{Op: "dial", Net: "udp", Err: syscall.ENETUNREACH})}
	res := compileOK(t, tcpSpec("db.berth.test.:5432"), env).Check(context.Background(), &Target{Name: "db-1"})
	// The resolver is what cannot be reached: that is a DNS failure, not
	// the target's network being unreachable.
	wantResult(t, res, false, ReasonDNSError, "lookup db.berth.test.", "network is unreachable")
}

func TestTCPTemplateFails(t *testing.T) {
	t.Parallel()
	c := compileOK(t, tcpSpec("{{.UserData.host}}:22"), Env{Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("must not dial")
	}})
	res := c.Check(context.Background(), &Target{Name: "vm-1", UserData: map[string]string{"ip": "10.0.0.1"}})
	wantResult(t, res, false, ReasonProbeError, `probe.tcp.address: resource vm-1 has no user data key "host"`)

	c = compileOK(t, tcpSpec("{{.UserData.host}}"), Env{})
	res = c.Check(context.Background(), &Target{Name: "vm-1", UserData: map[string]string{"host": "10.0.0.1"}})
	wantResult(t, res, false, ReasonProbeError, "probe.tcp.address: resource vm-1: address 10.0.0.1: missing port in address")
}
