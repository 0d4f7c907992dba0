package probe

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

var svcTarget = &Target{Name: "svc-1", Type: "svc", UserData: map[string]string{"token": "sekret"}}

// statusServer answers every request with code and body.
func statusServer(t *testing.T, code int, body string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func httpCheck(t *testing.T, s HTTPSpec, env Env) Result {
	t.Helper()
	return compileOK(t, Spec{HTTP: &s}, env).Check(context.Background(), svcTarget)
}

func TestHTTPStatus(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		code   int
		body   string
		expect []int
		ok     bool
		reason Reason
		msg    string
	}{
		{200, "fine", nil, true, "", ": 200 OK"},
		{204, "", nil, true, "", ": 204 No Content"},
		{204, "", []int{204}, true, "", ": 204 No Content"},
		{204, "", []int{200}, false, ReasonHTTPStatus, ": 204 No Content"},
		{401, "who are you", nil, false, ReasonUnauthorized, ": 401 Unauthorized: who are you"},
		{403, "no", nil, false, ReasonUnauthorized, ": 403 Forbidden: no"},
		{401, "", []int{401}, true, "", ": 401 Unauthorized"},
		{503, "down for\nmaintenance\n", nil, false, ReasonHTTPStatus, ": 503 Service Unavailable: down for maintenance"},
		{500, strings.Repeat("x", 5000), nil, false, ReasonHTTPStatus, ": 500 Internal Server Error: " + strings.Repeat("x", snippetLimit) + "…"},
	} {
		t.Run(fmt.Sprintf("%d%v", c.code, c.expect), func(t *testing.T) {
			t.Parallel()
			srv := statusServer(t, c.code, c.body)
			res := httpCheck(t, HTTPSpec{URL: srv.URL + "/healthz", ExpectStatus: c.expect}, Env{})
			wantResult(t, res, c.ok, c.reason, "GET "+srv.URL+"/healthz"+c.msg)
			if !strings.HasSuffix(res.Message, c.msg) {
				t.Fatalf("message %q does not end with %q", res.Message, c.msg)
			}
		})
	}
}

func TestHTTPRefused(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	res := httpCheck(t, HTTPSpec{URL: "http://" + addr + "/"}, Env{})
	wantResult(t, res, false, ReasonConnectionRefused, "GET http://"+addr+"/: dial tcp "+addr+": connect: connection refused")
}

func TestHTTPBearerToken(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	want := "sekret"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+want {
			http.Error(w, "bad token", http.StatusUnauthorized)
		}
	}))
	defer srv.Close()

	wantResult(t, httpCheck(t, HTTPSpec{URL: srv.URL, BearerToken: "{{.UserData.token}}"}, Env{}), true, "")
	wantResult(t, httpCheck(t, HTTPSpec{URL: srv.URL, BearerToken: "wrong"}, Env{}), false, ReasonUnauthorized, "401 Unauthorized: bad token")
	wantResult(t, httpCheck(t, HTTPSpec{URL: srv.URL}, Env{}), false, ReasonUnauthorized)

	// From a file, read at every probe: a rotated token is used at once.
	file := writeFile(t, "token", []byte("sekret\n"))
	c := compileOK(t, Spec{HTTP: &HTTPSpec{URL: srv.URL, BearerTokenFile: file}}, Env{})
	wantResult(t, c.Check(context.Background(), svcTarget), true, "")
	mu.Lock()
	want = "rotated"
	mu.Unlock()
	wantResult(t, c.Check(context.Background(), svcTarget), false, ReasonUnauthorized)
	if err := os.WriteFile(file, []byte("rotated"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantResult(t, c.Check(context.Background(), svcTarget), true, "")

	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	wantResult(t, c.Check(context.Background(), svcTarget), false, ReasonProbeError, "probe.http.bearerTokenFile: open "+file+": no such file")
}

func TestHTTPRedirects(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/old":
			http.Redirect(w, r, "/new", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	}))
	defer srv.Close()
	wantResult(t, httpCheck(t, HTTPSpec{URL: srv.URL + "/old"}, Env{}), true, "", "200 OK (redirected to "+srv.URL+"/new)")
	wantResult(t, httpCheck(t, HTTPSpec{URL: srv.URL + "/loop"}, Env{}), false, ReasonHTTPStatus, "302 Found")
	wantResult(t, httpCheck(t, HTTPSpec{URL: srv.URL + "/old", ExpectStatus: []int{302}}, Env{}), true, "", "GET "+srv.URL+"/old: 302 Found")
}

// TestHTTPNoAnswer: the server reads the request and says nothing; the
// probe's timeout ends the wait, and the message says what it waited for.
func TestHTTPNoAnswer(t *testing.T) {
	t.Parallel()
	addr, gotRequest := silentServer(t, "\r\n\r\n")
	res := compileOK(t, Spec{HTTP: &HTTPSpec{URL: "http://" + addr + "/healthz"}}, Env{}).Check(timeoutWhen(t, gotRequest), svcTarget)
	wantResult(t, res, false, ReasonTimeout, "GET http://"+addr+"/healthz: no answer within the probe timeout (waiting for the response)")
}

func TestHTTPConnectTimeout(t *testing.T) {
	t.Parallel()
	env := Env{Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		return nil, fmt.Errorf("dial %s %s: no connection within the connect timeout of 2s: %w", network, address, ErrTimeout)
	}}
	res := httpCheck(t, HTTPSpec{URL: "http://10.0.0.1/"}, env)
	wantResult(t, res, false, ReasonTimeout, "GET http://10.0.0.1/: dial tcp 10.0.0.1:80: no connection within the connect timeout of 2s")
}

// TestHTTPBlackHole: the probe's timeout ends a connect that the network
// never answers, and the dial does not go on after Check returned (goleak
// would see it).
func TestHTTPBlackHole(t *testing.T) {
	t.Parallel()
	addr := blackHole(t)
	dialing := make(chan struct{})
	res := compileOK(t, Spec{HTTP: &HTTPSpec{URL: "http://" + addr + "/"}}, signalDial(dialing)).Check(timeoutWhen(t, dialing), svcTarget)
	wantResult(t, res, false, ReasonTimeout, "no answer within the probe timeout (connecting to "+addr+")")
}

func TestHTTPConnectionClosed(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		reset bool
		msg   string
	}{
		{"close", false, "connection closed by the peer (waiting for the response): EOF"},
		{"reset", true, "connection reset by peer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				if c.reset {
					_ = conn.(*net.TCPConn).SetLinger(0) // close with RST
				}
				_ = conn.Close()
			}))
			defer srv.Close()
			res := httpCheck(t, HTTPSpec{URL: srv.URL}, Env{})
			wantResult(t, res, false, ReasonConnectionReset, "GET "+srv.URL+": ", c.msg)
		})
	}
}

func TestHTTPNXDOMAIN(t *testing.T) {
	t.Parallel()
	res := httpCheck(t, HTTPSpec{URL: "http://svc.berth.test./healthz"}, Env{Resolver: fakeResolver(t, nil)})
	wantResult(t, res, false, ReasonDNSError, "GET http://svc.berth.test./healthz: dial tcp: lookup svc.berth.test.", "no such host")
}

func tlsServer(t *testing.T, cert tls.Certificate, edits ...func(*tls.Config)) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	for _, e := range edits {
		e(srv.TLS)
	}
	// The TLS failures are the client's point; the server's log of them
	// is noise.
	srv.Config.ErrorLog = discardLog()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPTLS(t *testing.T) {
	t.Parallel()
	p := pki()
	caFile := writeFile(t, "ca.pem", p.caPEM)
	for _, c := range []struct {
		name     string
		cert     tls.Certificate
		caFile   string
		insecure bool
		ok       bool
		msg      string
	}{
		{"valid", p.server, caFile, false, true, "200 OK"},
		{"system roots", p.server, "", false, false, "x509: certificate signed by unknown authority"},
		{"expired", p.expired, caFile, false, false, "x509: certificate has expired or is not yet valid"},
		{"wrong host", p.wrongHost, caFile, false, false, "x509: certificate is valid for 127.0.0.2, not 127.0.0.1"},
		{"unknown CA", p.unknownCA, caFile, false, false, "x509: certificate signed by unknown authority"},
		{"unknown CA, insecure", p.unknownCA, "", true, true, "200 OK"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := tlsServer(t, c.cert)
			res := httpCheck(t, HTTPSpec{URL: srv.URL + "/healthz", CAFile: c.caFile, InsecureSkipVerify: c.insecure}, Env{})
			reason := ReasonTLSError
			if c.ok {
				reason = ""
			}
			wantResult(t, res, c.ok, reason, "GET "+srv.URL+"/healthz: "+c.msg)
		})
	}
}

// TestHTTPSToPlainHTTP: an https URL that an http server answers.
func TestHTTPSToPlainHTTP(t *testing.T) {
	t.Parallel()
	srv := statusServer(t, 200, "")
	srv.Config.ErrorLog = discardLog()
	res := httpCheck(t, HTTPSpec{URL: strings.Replace(srv.URL, "http:", "https:", 1)}, Env{})
	wantResult(t, res, false, ReasonTLSError, "http: server gave HTTP response to HTTPS client")
}

// TestHTTPSToSSH: an https URL where something else speaks first.
func TestHTTPSToSSH(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
		_, _ = io.Copy(io.Discard, c) // until the client hangs up
	}()
	defer func() { l.Close(); <-done }()
	res := httpCheck(t, HTTPSpec{URL: "https://" + l.Addr().String() + "/"}, Env{})
	wantResult(t, res, false, ReasonTLSError, "tls: first record does not look like a TLS handshake")
}

// TestHTTPTLSNoAnswer: the server takes the connection and never answers
// the ClientHello.
func TestHTTPTLSNoAnswer(t *testing.T) {
	t.Parallel()
	addr, gotHello := silentServer(t, "")
	res := compileOK(t, Spec{HTTP: &HTTPSpec{URL: "https://" + addr + "/"}}, Env{}).Check(timeoutWhen(t, gotHello), svcTarget)
	wantResult(t, res, false, ReasonTimeout, "no answer within the probe timeout (TLS handshake with "+addr+")")
}

// toxicProxy starts an in-process toxiproxy in front of upstream.
func toxicProxy(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	srv.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	proxy := toxiproxy.NewProxy(srv, t.Name(), "127.0.0.1:0", upstream)
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Stop)
	return proxy
}

func withToxic(t *testing.T, proxy *toxiproxy.Proxy, json string) {
	t.Helper()
	if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(json)); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPLatency: a slow network is not a broken one.
func TestHTTPLatency(t *testing.T) {
	t.Parallel()
	srv := statusServer(t, 200, "")
	proxy := toxicProxy(t, srv.Listener.Addr().String())
	withToxic(t, proxy, `{"name":"slow","type":"latency","stream":"downstream","attributes":{"latency":20}}`)
	withToxic(t, proxy, `{"name":"slow-up","type":"latency","stream":"upstream","attributes":{"latency":20}}`)
	res := httpCheck(t, HTTPSpec{URL: "http://" + proxy.Listen + "/healthz"}, Env{})
	wantResult(t, res, true, "", "200 OK")
}

// TestHTTPBlackHoledAnswer: the request gets through, the answer is
// swallowed (a one-way network split).
func TestHTTPBlackHoledAnswer(t *testing.T) {
	t.Parallel()
	answered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		once.Do(func() { close(answered) })
		// Keep the connection: a server closing it would reach the
		// client through the proxy as EOF.
		<-release
	}))
	defer srv.Close()
	defer close(release)
	proxy := toxicProxy(t, srv.Listener.Addr().String())
	withToxic(t, proxy, `{"name":"blackhole","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
	res := compileOK(t, Spec{HTTP: &HTTPSpec{URL: "http://" + proxy.Listen + "/healthz"}}, Env{}).Check(timeoutWhen(t, answered), svcTarget)
	wantResult(t, res, false, ReasonTimeout, "no answer within the probe timeout (waiting for the response)")
}

func TestHTTPUnreachable(t *testing.T) {
	t.Parallel()
	env := Env{Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}
	}}
	res := httpCheck(t, HTTPSpec{URL: "http://10.0.0.1/"}, env)
	wantResult(t, res, false, ReasonNetworkUnreachable, "GET http://10.0.0.1/: dial tcp: connect: no route to host")
}
