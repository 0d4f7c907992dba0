// Package probe finds out whether resources are reachable. A Checker makes
// one probe of one resource (a TCP connect, an HTTP GET, a Kubernetes
// /readyz, a command); a Prober runs the checkers of every probed pool on
// their schedule and turns their results into each resource's health
// condition, with thresholds, jitter and a capped backoff.
package probe

import (
	"context"
	"errors"
	"net"
)

// Reason says why a probe failed. The set is fixed and documented
// (docs/probes.md), so that alerts and dashboards can match on it.
type Reason string

const (
	// ReasonConnectionRefused: nothing listens at the address (RST to SYN).
	ReasonConnectionRefused Reason = "ConnectionRefused"
	// ReasonTimeout: no answer within the connect timeout or the probe's
	// timeout (a black-holed address, an overloaded server).
	ReasonTimeout Reason = "Timeout"
	// ReasonDNSError: the host name does not resolve.
	ReasonDNSError Reason = "DNSError"
	// ReasonTLSError: the TLS handshake failed (unknown authority, expired
	// or mismatched certificate, protocol error).
	ReasonTLSError Reason = "TLSError"
	// ReasonUnauthorized: the server answered 401 or 403.
	ReasonUnauthorized Reason = "Unauthorized"
	// ReasonHTTPStatus: the server answered with a status not expected.
	ReasonHTTPStatus Reason = "HTTPStatus"
	// ReasonExecFailed: the probe command exited non-zero or could not run.
	ReasonExecFailed Reason = "ExecFailed"
	// ReasonConnectionReset: the connection was reset or closed mid-probe.
	ReasonConnectionReset Reason = "ConnectionReset"
	// ReasonNetworkUnreachable: no route to the host or network.
	ReasonNetworkUnreachable Reason = "NetworkUnreachable"
	// ReasonProbeError: the probe could not be made for this resource (a
	// template names user data the resource lacks, a kubeconfig that does
	// not parse). The resource's health is Unknown, not Disconnected.
	ReasonProbeError Reason = "ProbeError"
	// ReasonError: any other failure; the message tells.
	ReasonError Reason = "Error"
)

// Reasons lists every Reason, for docs, metrics and tests.
var Reasons = []Reason{
	ReasonConnectionRefused, ReasonTimeout, ReasonDNSError, ReasonTLSError, ReasonUnauthorized,
	ReasonHTTPStatus, ReasonExecFailed, ReasonConnectionReset, ReasonNetworkUnreachable, ReasonProbeError, ReasonError,
}

// Result is the outcome of one probe.
type Result struct {
	OK bool
	// Reason is set when !OK.
	Reason Reason
	// Message says what happened in words, e.g. "dial tcp 127.0.0.1:9:
	// connect: connection refused" or "GET https://…/readyz: 200 OK".
	Message string
}

// Target is the resource a probe is made against; spec templates are
// rendered with it ({{.Name}}, {{.Type}}, {{.UserData.key}},
// {{.Labels.key}}).
type Target struct {
	Name     string
	Type     string
	UserData map[string]string
	Labels   map[string]string
}

// Checker makes one probe of one resource. ctx carries the probe's overall
// timeout: when it ends with cause ErrTimeout, the failure is a Timeout.
// Check must return when ctx ends and leave nothing running.
type Checker interface {
	Check(ctx context.Context, t *Target) Result
}

// ErrTimeout is the cause of a probe context that ran out of time, and of
// a dial that ran past the connect timeout.
var ErrTimeout = errors.New("probe timed out")

// Env is what checkers take from the prober rather than reaching for it
// themselves, so that tests can run them on a fake clock.
type Env struct {
	// Dial opens a network connection. The prober's dialer enforces the
	// connect timeout on its clock and fails with an error that wraps
	// ErrTimeout when it runs out. Default: a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Resolver, if set, is the resolver the default Dial uses.
	Resolver *net.Resolver
}

func (e Env) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if e.Dial != nil {
		return e.Dial(ctx, network, address)
	}
	d := net.Dialer{Resolver: e.Resolver}
	return d.DialContext(ctx, network, address)
}
