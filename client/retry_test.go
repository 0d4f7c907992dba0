package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-ci/berth"
)

// countingHandler counts the requests it passes on.
type countingHandler struct{ n atomic.Int64 }

func (c *countingHandler) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.n.Add(1)
		h.ServeHTTP(w, r)
	})
}

// scripted is a server that answers the i-th request (from 0) with
// answers[i], and every later one with the last answer.
type scripted struct {
	srv     *httptest.Server
	n       atomic.Int64
	arrived chan time.Time // buffered: when each request arrived

	mu   sync.Mutex
	seen []string // "METHOD /path body" of each request
}

func (s *scripted) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

type answer func(w http.ResponseWriter, r *http.Request)

func jsonAnswer(status int, body string, header ...string) answer {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintln(w, body)
	}
}

func errorAnswer(status int, code berth.ErrorCode, header ...string) answer {
	return jsonAnswer(status, fmt.Sprintf(`{"error":{"code":%q,"message":"scripted %s"}}`, code, code), header...)
}

var poolsOK = jsonAnswer(http.StatusOK, `{"pools":[{"type":"vm","leaseTTL":"1m","janitor":"none","total":1}]}`)

func newScripted(t *testing.T, answers ...answer) *scripted {
	t.Helper()
	s := &scripted{arrived: make(chan time.Time, 100)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.seen = append(s.seen, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+string(body)))
		s.mu.Unlock()
		i := int(s.n.Add(1)) - 1
		select {
		case s.arrived <- time.Now():
		default:
		}
		answers[min(i, len(answers)-1)](w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// closedURL returns the URL of a port on which nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr
}

func TestRetryOn5xxThenSuccess(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		first answer
	}{
		{"503 unavailable", errorAnswer(http.StatusServiceUnavailable, berth.EUnavailable)},
		{"500 internal", errorAnswer(http.StatusInternalServerError, berth.EInternal)},
		{"502 from a proxy, not JSON", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
		}},
		{"429 too many", errorAnswer(http.StatusTooManyRequests, berth.EUnavailable)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newScripted(t, tc.first, tc.first, poolsOK)
			c := newClient(t, testOptions(s.srv.URL))
			ps, err := c.Pools(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) != 1 || ps[0].Type != "vm" || ps[0].LeaseTTL.Std() != time.Minute {
				t.Fatalf("pools = %+v", ps)
			}
			if n := s.n.Load(); n != 3 {
				t.Fatalf("server saw %d requests; want 3", n)
			}
		})
	}
}

func TestNeverRetry4xx(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status int
		code   berth.ErrorCode
	}{
		{http.StatusBadRequest, berth.EInvalid},
		{http.StatusNotFound, berth.ENotFound},
		{http.StatusConflict, berth.EConflict},
		{http.StatusGone, berth.ELeaseLost},
		{http.StatusRequestEntityTooLarge, berth.ETooLarge},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			t.Parallel()
			s := newScripted(t, errorAnswer(tc.status, tc.code), poolsOK)
			c := newClient(t, testOptions(s.srv.URL))
			_, err := c.Pools(testContext(t))
			be := wantCode(t, err, tc.code)
			if be.Message != "scripted "+string(tc.code) || !strings.HasPrefix(err.Error(), "GET /v1/pools: ") {
				t.Fatalf("error = %q", err)
			}
			if n := s.n.Load(); n != 1 {
				t.Fatalf("server saw %d requests; want 1", n)
			}
		})
	}
}

func TestNonJSONErrorAnswer(t *testing.T) {
	t.Parallel()
	s := newScripted(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "forbidden by the proxy", http.StatusForbidden)
	})
	c := newClient(t, testOptions(s.srv.URL))
	_, err := c.Pools(testContext(t))
	be := wantCode(t, err, berth.EInternal)
	if !strings.Contains(be.Message, "403 Forbidden") || !strings.Contains(be.Message, "forbidden by the proxy") {
		t.Fatalf("error = %q; want the status and the body", err)
	}
	if n := s.n.Load(); n != 1 {
		t.Fatalf("server saw %d requests; want 1", n)
	}
}

func TestGiveUpAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	s := newScripted(t, errorAnswer(http.StatusServiceUnavailable, berth.EUnavailable))
	opts := testOptions(s.srv.URL)
	opts.MaxAttempts = 3
	c := newClient(t, opts)
	_, err := c.Pools(testContext(t))
	wantCode(t, err, berth.EUnavailable)
	if !strings.Contains(err.Error(), "GET /v1/pools: giving up after 3 attempts") {
		t.Fatalf("error = %q", err)
	}
	if n := s.n.Load(); n != 3 {
		t.Fatalf("server saw %d requests; want 3", n)
	}
}

func TestRetryAfterIsHonouredAndCapped(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			// Retry-After asks for an hour; MaxBackoff caps it at 50ms,
			// while the backoff alone would wait at most 1ms.
			s := newScripted(t, errorAnswer(status, berth.EUnavailable, "Retry-After", "3600"), poolsOK)
			opts := testOptions(s.srv.URL)
			opts.MinBackoff, opts.MaxBackoff = time.Millisecond, 50*time.Millisecond
			c := newClient(t, opts)
			if _, err := c.Pools(testContext(t)); err != nil {
				t.Fatal(err)
			}
			first, second := <-s.arrived, <-s.arrived
			if gap := second.Sub(first); gap < 50*time.Millisecond || gap > 2*time.Second {
				t.Fatalf("retried after %s; want Retry-After capped at MaxBackoff (50ms)", gap)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", -1},
		{"0", 0},
		{"7", 7 * time.Second},
		{" 2 ", 2 * time.Second},
		{"-3", -1},
		{"soon", -1},
		{"99999999999", 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s; want %s", tc.in, got, tc.want)
		}
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	t.Parallel()
	c := newClient(t, Options{Servers: []string{"http://h"}, MinBackoff: 10 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})
	seen := map[time.Duration]bool{}
	for n := 1; n <= 40; n++ {
		limit := min(10*time.Millisecond<<min(n-1, 20), 80*time.Millisecond)
		for range 20 {
			d := c.backoff(n)
			if d < 0 || d > limit {
				t.Fatalf("backoff(%d) = %s; want within [0, %s]", n, d, limit)
			}
			seen[d] = true
		}
	}
	if len(seen) < 10 {
		t.Fatalf("backoff took only %d distinct values; want jitter", len(seen))
	}
}

func TestFailoverFromClosedPort(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := newBroker(t, brokerOptions{})
	opts := testOptions(closedURL(t), b.srv.URL)
	opts.MaxAttempts = 2
	c := newClient(t, opts)
	// The first call meets the refused connection and succeeds on the
	// second server.
	if _, err := c.Pools(ctx); err != nil {
		t.Fatalf("first call: %v", err)
	}
	// Later calls start with the server that answered: one attempt is
	// enough.
	c.maxAttempts = 1
	for range 3 {
		if _, err := c.Resources(ctx, ResourceFilter{}); err != nil {
			t.Fatalf("later call: %v", err)
		}
	}
}

func TestConnectionRefusedEverywhere(t *testing.T) {
	t.Parallel()
	opts := testOptions(closedURL(t), closedURL(t))
	opts.MaxAttempts = 4
	c := newClient(t, opts)
	_, err := c.Pools(testContext(t))
	if err == nil || !strings.Contains(err.Error(), "giving up after 4 attempts") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("error = %v; want giving up after 4 attempts on connection refused", err)
	}
}

func TestFailoverOn503(t *testing.T) {
	t.Parallel()
	down := newScripted(t, errorAnswer(http.StatusServiceUnavailable, berth.EUnavailable))
	up := newScripted(t, poolsOK)
	c := newClient(t, testOptions(down.srv.URL, up.srv.URL))
	if _, err := c.Pools(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if d, u := down.n.Load(), up.n.Load(); d != 1 || u != 1 {
		t.Fatalf("down saw %d, up saw %d requests; want 1 and 1", d, u)
	}
}

func TestRetryEOFBeforeAnswer(t *testing.T) {
	t.Parallel()
	hangUp := func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close()
	}
	s := newScripted(t, hangUp, poolsOK)
	c := newClient(t, testOptions(s.srv.URL))
	if _, err := c.Pools(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if n := s.n.Load(); n != 2 {
		t.Fatalf("server saw %d requests; want 2", n)
	}
}

func TestRetrySilentServer(t *testing.T) {
	t.Parallel()
	silent := newScripted(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers nothing until the client hangs up
	})
	up := newScripted(t, poolsOK)
	c := newClient(t, testOptions(silent.srv.URL, up.srv.URL))
	c.attemptTimeout = 50 * time.Millisecond
	if _, err := c.Pools(testContext(t)); err != nil {
		t.Fatal(err)
	}
	// Exact counts would depend on the machine's speed: on a loaded one an
	// attempt on the healthy server can time out too, and be retried.
	if s, u := silent.n.Load(), up.n.Load(); s < 1 || u < 1 {
		t.Fatalf("silent saw %d, up saw %d requests; want both asked", s, u)
	}
}

func TestContextEndsRetries(t *testing.T) {
	t.Parallel()
	// The server asks for a one-second pause; the context has less left.
	s := newScripted(t, errorAnswer(http.StatusServiceUnavailable, berth.EUnavailable, "Retry-After", "1"))
	opts := testOptions(s.srv.URL)
	opts.MaxBackoff = 10 * time.Second
	c := newClient(t, opts)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Pools(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v; want context.DeadlineExceeded", err)
	}
	wantCode(t, err, berth.EUnavailable) // the last answer is kept
	if took := time.Since(start); took > time.Second {
		t.Fatalf("took %s; want to stop as soon as the deadline is too close", took)
	}

	// A context cancelled during the backoff ends the call at once.
	s = newScripted(t, errorAnswer(http.StatusServiceUnavailable, berth.EUnavailable, "Retry-After", "1"))
	opts = testOptions(s.srv.URL)
	opts.MaxBackoff = time.Hour
	c = newClient(t, opts)
	ctx, cancel = context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.Pools(ctx)
		done <- err
	}()
	receive(t, "the first request", s.arrived)
	cancel()
	if err := receive(t, "Pools to return", done); !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v; want context.Canceled", err)
	}
}
