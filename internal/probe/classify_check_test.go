package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
)

// TestClassify covers the errors the checker tests cannot make happen on
// a loopback-only machine (no route to a host, a DNS server that times
// out), and the rules of precedence between an error and a timed-out
// probe context.
func TestClassify(t *testing.T) {
	t.Parallel()
	dialErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 22}, Err: os.NewSyscallError("connect", errno)}
	}
	readErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
	}
	timedOut, cancel := context.WithCancelCause(context.Background())
	cancel(ErrTimeout)
	stopped, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("prober stopping"))
	live := context.Background()

	for _, c := range []struct {
		name   string
		ctx    context.Context
		err    error
		stage  string
		reason Reason
		msg    string
	}{
		{"refused", live, dialErr(syscall.ECONNREFUSED), "", ReasonConnectionRefused, "dial tcp 10.0.0.1:22: connect: connection refused"},
		{"refused beats a timeout after it", timedOut, dialErr(syscall.ECONNREFUSED), "", ReasonConnectionRefused, "dial tcp 10.0.0.1:22: connect: connection refused"},
		{"no route to host", live, dialErr(syscall.EHOSTUNREACH), "", ReasonNetworkUnreachable, "dial tcp 10.0.0.1:22: connect: no route to host"},
		{"network unreachable", live, dialErr(syscall.ENETUNREACH), "", ReasonNetworkUnreachable, "dial tcp 10.0.0.1:22: connect: network is unreachable"},
		{"kernel connect timeout", live, dialErr(syscall.ETIMEDOUT), "", ReasonTimeout, "dial tcp 10.0.0.1:22: connect: connection timed out"},
		{"i/o deadline", live, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, "", ReasonTimeout, "read tcp: i/o timeout"},
		{"probe timeout", timedOut, fmt.Errorf("dial: %w", context.Canceled), "TLS handshake with 10.0.0.1:443", ReasonTimeout,
			"no answer within the probe timeout (TLS handshake with 10.0.0.1:443)"},
		{"probe timeout as the error", timedOut, ErrTimeout, "waiting for the response", ReasonTimeout,
			"no answer within the probe timeout (waiting for the response)"},
		{"connect timeout of the dialer", live, fmt.Errorf("dial tcp 10.0.0.1:22: no connection within 2s: %w", ErrTimeout), "", ReasonTimeout,
			"dial tcp 10.0.0.1:22: no connection within 2s: probe timed out"},
		{"reset", live, readErr(syscall.ECONNRESET), "", ReasonConnectionReset, "read tcp: read: connection reset by peer"},
		{"broken pipe", live, readErr(syscall.EPIPE), "", ReasonConnectionReset, "read tcp: read: broken pipe"},
		{"aborted", live, readErr(syscall.ECONNABORTED), "", ReasonConnectionReset, "read tcp: read: software caused connection abort"},
		{"unexpected EOF", live, io.ErrUnexpectedEOF, "reading", ReasonConnectionReset, "connection closed by the peer (reading): unexpected EOF"},
		{"reset after the probe timed out is the timeout", timedOut, readErr(syscall.ECONNRESET), "waiting for the response", ReasonTimeout,
			"no answer within the probe timeout (waiting for the response)"},
		{"DNS not found", live, &net.DNSError{Err: "no such host", Name: "db.example", IsNotFound: true}, "", ReasonDNSError, "lookup db.example: no such host"},
		{"DNS server timeout", live, &net.DNSError{Err: "i/o timeout", Name: "db.example", Server: "10.0.0.2:53", IsTimeout: true}, "", ReasonDNSError,
			"lookup db.example on 10.0.0.2:53: i/o timeout"},
		{"DNS cut by the probe timeout", timedOut, &net.DNSError{Err: "operation was canceled", Name: "db.example"}, "", ReasonDNSError,
			"lookup db.example: no answer within the probe timeout"},
		{"unknown authority", live, &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "", ReasonTLSError, "x509: certificate signed by unknown authority"},
		{"hostname", live, x509.HostnameError{Certificate: &x509.Certificate{DNSNames: []string{"a.example"}}, Host: "b.example"}, "", ReasonTLSError,
			"x509: certificate is valid for a.example, not b.example"},
		{"record header", live, tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "", ReasonTLSError, "tls: first record does not look like a TLS handshake"},
		{"local alert", live, fmt.Errorf("tls: bad: %w", tls.AlertError(40)), "", ReasonTLSError, "tls: bad: tls: handshake failure"},
		{"untyped tls error in the handshake", live, errors.New("tls: server selected unsupported protocol version 300"), "TLS handshake with h:443", ReasonTLSError,
			"tls: server selected unsupported protocol version 300"},
		{"prober stopping", stopped, context.Canceled, "", ReasonError, "probe cancelled: prober stopping"},
		{"anything else", live, errors.New("malformed HTTP response"), "", ReasonError, "malformed HTTP response"},
	} {
		reason, msg := classify(c.ctx, c.err, c.stage)
		if reason != c.reason || msg != c.msg {
			t.Errorf("%s: classify = %s %q; want %s %q", c.name, reason, msg, c.reason, c.msg)
		}
	}
}

// TestHTTPClientCertificateRequired: the server rejects the handshake
// with an alert (no client certificate), which the client only learns
// when it reads.
func TestHTTPClientCertificateRequired(t *testing.T) {
	t.Parallel()
	srv := tlsServer(t, pki().server, func(c *tls.Config) {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = pki().caPool
	})
	res := httpCheck(t, HTTPSpec{URL: srv.URL, CAFile: writeFile(t, "ca.pem", pki().caPEM)}, Env{})
	wantResult(t, res, false, ReasonTLSError, "GET "+srv.URL+": remote error: tls: certificate required")
}
