package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"unicode/utf8"
)

// Bounds on what a probe reads of a failed answer's body, and on how much
// of it goes into the message.
const (
	bodyReadLimit = 4 << 10
	snippetLimit  = 300
)

// newTransport returns the transport of HTTP and Kubernetes probes. It
// opens a connection for every request and closes it after: a pooled
// connection would hide a broken network (a new connection is what a job
// would need). It dials through env, so that the prober's connect timeout
// and tests' dialers apply, and ignores HTTP_PROXY: a probe checks the
// path from berth to the target, not to a proxy.
func newTransport(env Env, tlsConf *tls.Config) *http.Transport {
	return &http.Transport{
		DialContext:            boundDial(env),
		TLSClientConfig:        tlsConf,
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
}

// probeCtxKey carries the probe's context to boundDial.
type probeCtxKey struct{}

// boundDial ties the dial and the connection to the probe's context.
// net/http dials on a context detached from the request's cancellation (so
// that a dial may serve a later request) and runs the TLS handshake on it.
// For a probe that would leave a dial to a black-holed address, or a
// handshake with a server that never answers, running on after Check
// returned. get passes the probe's context down as a value: the dial is
// cancelled with it, and the connection closed when it ends.
func boundDial(env Env) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		pctx, _ := ctx.Value(probeCtxKey{}).(context.Context)
		if pctx == nil {
			return env.dial(ctx, network, address)
		}
		dctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		stop := context.AfterFunc(pctx, func() { cancel(context.Cause(pctx)) })
		conn, err := env.dial(dctx, network, address)
		stop()
		if err != nil {
			return nil, err
		}
		context.AfterFunc(pctx, func() { _ = conn.Close() })
		return conn, nil
	}
}

// errProbeDone ends what a finished probe left behind.
var errProbeDone = errors.New("probe done")

// get makes req under ctx and judges the answer: a status expected()
// accepts is OK, 401 and 403 are Unauthorized, any other HTTPStatus; an
// error is classified. Messages start with "GET URL: ".
func get(ctx context.Context, client *http.Client, req *http.Request, expected func(code int) bool) Result {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(errProbeDone)

	op := "GET " + req.URL.Redacted()
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "berth-probe") // for the target's access log
	}
	st := new(stage)
	rctx := httptrace.WithClientTrace(context.WithValue(ctx, probeCtxKey{}, ctx), st.trace())
	resp, err := client.Do(req.WithContext(rctx))
	if err != nil {
		at := st.get()
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its "Get \"URL\":" repeats op
		}
		res := failed(ctx, err, at)
		res.Message = op + ": " + res.Message
		return res
	}
	defer func() { _ = resp.Body.Close() }()

	msg := op + ": " + resp.Status
	if final := resp.Request.URL; final.String() != req.URL.String() {
		msg += " (redirected to " + final.Redacted() + ")"
	}
	if expected(resp.StatusCode) {
		return Result{OK: true, Message: msg}
	}
	if s := snippet(resp.Body); s != "" {
		msg += ": " + s
	}
	reason := ReasonHTTPStatus
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		reason = ReasonUnauthorized
	}
	return Result{Reason: reason, Message: msg}
}

// snippet reads the start of a failed answer's body for the message, on
// one line. Where the body is a Kubernetes health report ("[+]ping ok",
// "[-]etcd failed: …"), only the failed checks are kept.
func snippet(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, bodyReadLimit))
	text := strings.ToValidUTF8(string(b), "")
	var failedChecks []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "[-]") {
			failedChecks = append(failedChecks, line)
		}
	}
	if len(failedChecks) > 0 {
		text = strings.Join(failedChecks, "; ")
	}
	text = strings.Join(strings.Fields(text), " ")
	if len(text) > snippetLimit {
		cut := snippetLimit
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "…"
	}
	return text
}

// stage follows an HTTP exchange through its steps, so that a timeout can
// say where it stopped. Trace hooks run on the transport's goroutines.
type stage struct {
	mu   sync.Mutex
	addr string
	now  string
}

func (s *stage) set(now string) {
	s.mu.Lock()
	s.now = now
	s.mu.Unlock()
}

func (s *stage) get() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

func (s *stage) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GetConn: func(hostPort string) {
			s.mu.Lock()
			s.addr, s.now = hostPort, "connecting to "+hostPort
			s.mu.Unlock()
		},
		DNSStart:     func(i httptrace.DNSStartInfo) { s.set("looking up " + i.Host) },
		ConnectStart: func(_, addr string) { s.set("connecting to " + addr) },
		TLSHandshakeStart: func() {
			s.mu.Lock()
			s.now = stageTLS + " with " + s.addr
			s.mu.Unlock()
		},
		GotConn: func(httptrace.GotConnInfo) { s.set("sending the request") },
		// WroteHeaders comes before the request is flushed to the
		// connection, so a server that has read the request knows the
		// stage is set; a probe's GET has no body to send after.
		WroteHeaders: func() { s.set("waiting for the response") },
	}
}
