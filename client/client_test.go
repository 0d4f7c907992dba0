package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// broker is a real berth server in-process.
type broker struct {
	eng *lease.Engine
	st  store.Store
	srv *httptest.Server
}

type brokerOptions struct {
	clock   clockwork.Clock
	maxPoll time.Duration
	pools   []lease.Pool
	// wrap, if set, wraps the API handler (to count, signal or fail
	// requests).
	wrap func(http.Handler) http.Handler
}

// vmPool is one pool "vm" with the named resources and a one-minute TTL.
func vmPool(names ...string) []lease.Pool {
	specs := make([]store.ResourceSpec, len(names))
	for i, n := range names {
		specs[i] = store.ResourceSpec{Name: n, UserData: map[string]string{"ip": "10.0.0." + n[len(n)-1:]}}
	}
	return []lease.Pool{{Type: "vm", LeaseTTL: time.Minute, Resources: specs}}
}

func newBroker(t *testing.T, o brokerOptions) *broker {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng := lease.New(lease.Options{Store: st, Clock: o.clock, MaxPoll: o.maxPoll})
	pools := o.pools
	if pools == nil {
		pools = vmPool("vm-1")
	}
	if _, err := eng.SyncPools(ctx, pools, "test"); err != nil {
		t.Fatal(err)
	}
	var h http.Handler = api.New(api.Options{Engine: eng, SchemaVersion: sqlite.SchemaVersion()})
	if o.wrap != nil {
		h = o.wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &broker{eng: eng, st: st, srv: srv}
}

// testOptions keep backoffs tiny.
func testOptions(servers ...string) Options {
	return Options{Servers: servers, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, ConnectTimeout: time.Second}
}

func newClient(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// testContext is the test's context with a deadline well within the
// test's time budget, so that a hang fails fast with a clear message.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails unless err is (or wraps) a *berth.Error with code.
func wantCode(t *testing.T, err error, code berth.ErrorCode) *berth.Error {
	t.Helper()
	var be *berth.Error
	if !errors.As(err, &be) {
		t.Fatalf("error %v (%T) is not a *berth.Error; want code %q", err, err, code)
	}
	if be.Code != code {
		t.Fatalf("error %v has code %q; want %q", err, be.Code, code)
	}
	return be
}

// waitUntil spins until cond holds, failing the test after a deadline.
// cond must do real work (a call to the server) so the loop is not idle.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// receive returns the next value from ch or fails after a deadline.
func receive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		opts  Options
		field string
		msg   string
	}{
		{"no servers", Options{}, "Servers", "is empty"},
		{"no scheme", Options{Servers: []string{"127.0.0.1:7420"}}, "Servers[0]", "http://127.0.0.1:7420"},
		{"host without scheme", Options{Servers: []string{"localhost:7420"}}, "Servers[0]", "not http or https"},
		{"bad scheme", Options{Servers: []string{"http://ok:1", "ftp://host"}}, "Servers[1]", `scheme "ftp"`},
		{"no host", Options{Servers: []string{"http://"}}, "Servers[0]", "no host"},
		{"query", Options{Servers: []string{"http://h:1/?a=b"}}, "Servers[0]", "query"},
		{"not a URL", Options{Servers: []string{"http://h:port"}}, "Servers[0]", "not a URL"},
		{"negative timeout", Options{Servers: []string{"http://h"}, ConnectTimeout: -1}, "ConnectTimeout", "negative"},
		{"negative attempts", Options{Servers: []string{"http://h"}, MaxAttempts: -1}, "MaxAttempts", "negative"},
		{"min over max", Options{Servers: []string{"http://h"}, MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MinBackoff", "more than MaxBackoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			be := wantCode(t, err, berth.EInvalid)
			if be.Field != tc.field || !strings.Contains(be.Message, tc.msg) {
				t.Fatalf("New: %v; want field %q and a message with %q", err, tc.field, tc.msg)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	t.Parallel()
	c, err := New(Options{Servers: []string{"http://h:7420/", "https://x.example/berth/"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.minBackoff != DefaultMinBackoff || c.maxBackoff != DefaultMaxBackoff || c.maxAttempts != DefaultMaxAttempts || c.userAgent != DefaultUserAgent {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if c.hc.Timeout != 0 {
		t.Fatalf("built http.Client has Timeout %s; long polls need none", c.hc.Timeout)
	}
	if got := strings.Join(c.servers, " "); got != "http://h:7420 https://x.example/berth" {
		t.Fatalf("servers = %q", got)
	}
	// Only MaxBackoff set below the default minimum: the minimum follows.
	c, err = New(Options{Servers: []string{"http://h"}, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if c.minBackoff != 10*time.Millisecond {
		t.Fatalf("minBackoff = %s; want 10ms", c.minBackoff)
	}
}

func TestServerErrorsAreBerthErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	var requests countingHandler
	b := newBroker(t, brokerOptions{wrap: requests.wrap})
	c := newClient(t, testOptions(b.srv.URL))

	_, err := c.Acquire(ctx, AcquireParams{Type: "gpu", Owner: "job-1"})
	be := wantCode(t, err, berth.EUnknownType)
	if be.Field != "type" || !strings.Contains(err.Error(), "POST /v1/leases") {
		t.Fatalf("Acquire: %v (field %q); want field type and the method and path", err, be.Field)
	}
	if berth.ErrorCodeOf(err) != berth.EUnknownType {
		t.Fatalf("ErrorCodeOf = %q", berth.ErrorCodeOf(err))
	}

	_, err = c.Acquire(ctx, AcquireParams{Type: "vm"})
	if be := wantCode(t, err, berth.EInvalid); be.Field != "owner" {
		t.Fatalf("Acquire without owner: %v; want field owner", err)
	}

	_, err = c.Lease(ctx, "no-such-lease")
	wantCode(t, err, berth.ENotFound)
	if !strings.Contains(err.Error(), "GET /v1/leases/no-such-lease") {
		t.Fatalf("Lease: %v; want the method and path", err)
	}
	_, err = c.Heartbeat(ctx, "no-such-lease")
	wantCode(t, err, berth.ENotFound)

	a, err := c.Acquire(ctx, AcquireParams{Type: "vm", Owner: "job-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Release(ctx, a.Lease.ID, ReleaseParams{To: berth.ReleaseBroken})
	if be := wantCode(t, err, berth.EInvalid); be.Field != "reason" {
		t.Fatalf("Release broken without reason: %v; want field reason", err)
	}
	_, err = c.Resources(ctx, ResourceFilter{Type: "bad name!"})
	wantCode(t, err, berth.EInvalid)

	// Each 4xx above was asked exactly once: 4xx are never retried.
	if n := requests.n.Load(); n != 7 {
		t.Fatalf("server saw %d requests; want 7 (one per call)", n)
	}
}
