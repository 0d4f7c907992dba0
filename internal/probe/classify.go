package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
)

// noAnswer is the message of a probe that ran out of time. Go's own errors
// only say "context canceled" or "operation was canceled" there, which
// reads like someone stopped the probe on purpose.
const noAnswer = "no answer within the probe timeout"

// stageTLS starts the stage of an exchange in its TLS handshake.
const stageTLS = "TLS handshake"

// classify says why err failed a probe made under ctx: the Reason and a
// message for a human. stage says what the probe was doing when err came
// ("TLS handshake with 10.0.0.1:443"); it is only used where err itself
// does not say, which is the case of a timeout.
//
// The order matters. Answers the network gave (refused, unreachable, a
// certificate the client rejects) stand even if the probe's time ran out
// just after. A reset or EOF does not: cancelling a probe closes its
// connection, and the error that follows is a symptom of the timeout.
//
// Name resolution failures are DNSError whatever their kind, a resolver
// timeout included and even when the probe's timeout cut the lookup
// short: what failed is DNS, and a Timeout would send the operator to look
// at the host instead.
func classify(ctx context.Context, err error, stage string) (Reason, string) {
	timedOut := ctx.Err() != nil && errors.Is(context.Cause(ctx), ErrTimeout)
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		if timedOut {
			return ReasonDNSError, "lookup " + dnsErr.Name + ": " + noAnswer
		}
		return ReasonDNSError, err.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonConnectionRefused, err.Error()
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return ReasonNetworkUnreachable, err.Error()
	case isTLSError(err):
		return ReasonTLSError, tlsMessage(err)
	case timedOut:
		return ReasonTimeout, withStage(noAnswer, stage)
	case errors.Is(err, ErrTimeout):
		// The prober's dialer gave up on the connect timeout; its error
		// says so in its own words.
		return ReasonTimeout, err.Error()
	case isTimeout(err):
		return ReasonTimeout, err.Error()
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return ReasonConnectionReset, err.Error()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// A bare "EOF" says nothing to a reader.
		return ReasonConnectionReset, withStage("connection closed by the peer", stage) + ": " + err.Error()
	case strings.HasPrefix(stage, stageTLS):
		// Neither the network nor the clock: crypto/tls refused the
		// handshake with one of its untyped errors ("tls: server selected
		// unsupported protocol version").
		return ReasonTLSError, err.Error()
	case ctx.Err() != nil:
		return ReasonError, "probe cancelled: " + context.Cause(ctx).Error()
	default:
		return ReasonError, err.Error()
	}
}

func withStage(msg, stage string) string {
	if stage == "" {
		return msg
	}
	return msg + " (" + stage + ")"
}

// isTimeout reports a timeout that err carries itself: a deadline, a
// kernel connect timeout (ETIMEDOUT).
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isTLSError reports whether err is a failed TLS handshake or a TLS
// protocol error, as opposed to the network failing under TLS.
func isTLSError(err error) bool {
	var (
		verify      *tls.CertificateVerificationError
		unknownCA   x509.UnknownAuthorityError
		invalid     x509.CertificateInvalidError
		hostname    x509.HostnameError
		systemRoots x509.SystemRootsError
		algorithm   x509.InsecureAlgorithmError
		record      tls.RecordHeaderError
		alert       tls.AlertError
		ech         *tls.ECHRejectionError
		op          *net.OpError
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &unknownCA), errors.As(err, &invalid),
		errors.As(err, &hostname), errors.As(err, &systemRoots), errors.As(err, &algorithm),
		errors.As(err, &record), errors.As(err, &alert), errors.As(err, &ech):
		return true
	case errors.Is(err, http.ErrSchemeMismatch):
		// An http server on the https port: net/http turns the
		// RecordHeaderError into this.
		return true
	case errors.As(err, &op) && op.Op == "remote error":
		// crypto/tls reports an alert from the peer (a rejected client
		// certificate, no common protocol version) as an OpError of this
		// Op around an unexported type.
		return true
	}
	return false
}

// tlsMessage is the part of a TLS error that says what went wrong: the
// x509 error under "tls: failed to verify certificate:", the peer's alert
// without net/http's internal context ("readLoopPeekFailLocked: ").
func tlsMessage(err error) string {
	var (
		verify *tls.CertificateVerificationError
		op     *net.OpError
	)
	switch {
	case errors.As(err, &verify) && verify.Err != nil:
		return verify.Err.Error()
	case errors.As(err, &op) && op.Op == "remote error":
		return op.Error()
	}
	return err.Error()
}

// failed is the Result of a probe that err failed.
func failed(ctx context.Context, err error, stage string) Result {
	reason, msg := classify(ctx, err, stage)
	return Result{Reason: reason, Message: msg}
}

// probeError is the Result of a probe that could not be made for the
// target (a template that does not render, a kubeconfig that does not
// load): the resource's health is then Unknown, not Disconnected.
func probeError(err error) Result {
	return Result{Reason: ReasonProbeError, Message: err.Error()}
}
