package probe

import (
	"context"
	"fmt"
	"net"
	"strings"
)

// tcpChecker probes by connecting and closing at once: reachable means
// something accepted the connection, nothing more.
type tcpChecker struct {
	address *field
	env     Env
}

func compileTCP(s TCPSpec, env Env) (*tcpChecker, error) {
	var c compiler
	addr := c.field("probe.tcp.address", s.Address, true, checkHostPort)
	if err := c.err(); err != nil {
		return nil, err
	}
	return &tcpChecker{address: addr, env: env}, nil
}

// checkHostPort accepts host:port with a port.
func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err == nil && port == "" {
		err = fmt.Errorf("address %s: missing port", s)
	}
	return err
}

func (c *tcpChecker) Check(ctx context.Context, t *Target) Result {
	addr, err := c.address.render(t)
	if err != nil {
		return probeError(err)
	}
	conn, err := c.env.dial(ctx, "tcp", addr)
	if err != nil {
		res := failed(ctx, err, "")
		// A net.OpError says "dial tcp ADDR: …" already; other errors,
		// from a custom dialer or a timeout, need the address.
		if !strings.HasPrefix(res.Message, "dial ") {
			res.Message = "dial tcp " + addr + ": " + res.Message
		}
		return res
	}
	msg := "connected to " + addr
	if ra := conn.RemoteAddr(); ra != nil && ra.String() != addr {
		msg += " (" + ra.String() + ")"
	}
	// Nothing to send: the probe only asks whether a connection opens.
	_ = conn.Close()
	return Result{OK: true, Message: msg}
}
