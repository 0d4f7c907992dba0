package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	srv   *httptest.Server
	store store.Store
}

func newFixture(t *testing.T, more ...lease.Pool) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	eng := lease.New(lease.Options{Store: st})
	_, err = eng.SyncPools(ctx, append([]lease.Pool{{Type: "vm", LeaseTTL: time.Minute, Resources: []store.ResourceSpec{
		{Name: "vm-1", UserData: map[string]string{"ip": "10.0.0.1"}, Labels: map[string]string{"zone": "a"}}, {Name: "vm-2"}}}}, more...), "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(api.Options{Engine: eng, SchemaVersion: sqlite.SchemaVersion()}))
	t.Cleanup(func() {
		srv.Close()
		if err := st.Check(context.Background()); err != nil {
			t.Errorf("store consistency: %v", err)
		}
		st.Close()
	})
	return &fixture{srv: srv, store: st}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (f *fixture) do(t *testing.T, method, path, contentType string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: res.StatusCode, header: res.Header, body: b}
}

func (f *fixture) json(t *testing.T, method, path string, body string) answer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	return f.do(t, method, path, "application/json", r)
}

func decode[T any](t *testing.T, a answer) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("decode %s: %v", a.body, err)
	}
	return v
}

// snapshot is everything a request could change.
func (f *fixture) snapshot(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	rs, err := f.store.ResourceList(ctx, &store.ResourceListParams{})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := f.store.EventList(ctx, &store.EventListParams{})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := f.store.PoolList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal([]any{rs, evs, ps})
	return string(b)
}

func TestLeaseLifecycle(t *testing.T) {
	f := newFixture(t)
	a := f.json(t, "POST", "/v1/leases", `{"type": "vm", "owner": "ci-1", "labels": {"zone": "a"}}`)
	if a.status != 200 || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("acquire: %d %s", a.status, a.body)
	}
	got := decode[api.LeaseResponse](t, a)
	if got.Resource.Name != "vm-1" || got.Resource.UserData["ip"] != "10.0.0.1" || got.Lease.Owner != "ci-1" || got.Lease.Token == 0 {
		t.Fatalf("acquire = %s", a.body)
	}
	// camelCase on the wire, as DESIGN.md fixes it.
	for _, field := range []string{`"expiresAt"`, `"userData"`, `"lastProbeTime"`, `"stateChangedAt"`} {
		if field == `"lastProbeTime"` {
			continue // omitted until a probe ran
		}
		if !bytes.Contains(a.body, []byte(field)) {
			t.Errorf("acquire answer lacks %s: %s", field, a.body)
		}
	}
	id := got.Lease.ID
	if a := f.json(t, "POST", "/v1/leases/"+id+"/heartbeat", ""); a.status != 200 {
		t.Fatalf("heartbeat: %d %s", a.status, a.body)
	}
	if a := f.json(t, "GET", "/v1/leases/"+id, ""); a.status != 200 || !bytes.Contains(a.body, []byte(`"status":"active"`)) {
		t.Fatalf("get lease: %d %s", a.status, a.body)
	}
	a = f.json(t, "POST", "/v1/leases/"+id+"/release", `{"to": "broken", "reason": "fan noise"}`)
	rel := decode[api.LeaseResponse](t, a)
	if a.status != 200 || rel.Resource.State != berth.StateQuarantined || rel.Resource.StateReason != "fan noise" {
		t.Fatalf("release: %d %s", a.status, a.body)
	}
	if a := f.json(t, "POST", "/v1/leases/"+id+"/heartbeat", ""); a.status != 410 {
		t.Fatalf("heartbeat after release: %d %s, want 410", a.status, a.body)
	}
	a = f.json(t, "GET", "/v1/pools", "")
	pools := decode[struct{ Pools []*berth.Pool }](t, a)
	if len(pools.Pools) != 1 || pools.Pools[0].States[berth.StateQuarantined] != 1 || pools.Pools[0].States[berth.StateFree] != 1 {
		t.Fatalf("pools: %s", a.body)
	}
	a = f.json(t, "GET", "/v1/resources?state=quarantined", "")
	rs := decode[struct{ Resources []*berth.Resource }](t, a)
	if len(rs.Resources) != 1 || rs.Resources[0].Name != "vm-1" {
		t.Fatalf("resources: %s", a.body)
	}
	a = f.json(t, "GET", "/v1/events?resource=vm-1&order=desc&limit=1", "")
	evs := decode[struct{ Events []*berth.Event }](t, a)
	if len(evs.Events) != 1 || evs.Events[0].To != "quarantined" || evs.Events[0].Message != "fan noise" {
		t.Fatalf("events: %s", a.body)
	}
}

func TestQueuedAcquireAnswers202(t *testing.T) {
	f := newFixture(t)
	for range 2 {
		if a := f.json(t, "POST", "/v1/leases", `{"type": "vm", "owner": "x"}`); a.status != 200 {
			t.Fatalf("acquire: %d %s", a.status, a.body)
		}
	}
	a := f.json(t, "POST", "/v1/leases", `{"type": "vm", "owner": "x"}`)
	if a.status != 409 || !bytes.Contains(a.body, []byte(`"code":"exhausted"`)) {
		t.Fatalf("exhausted: %d %s", a.status, a.body)
	}
	a = f.json(t, "POST", "/v1/leases", `{"type": "vm", "owner": "x", "requestId": "r-1", "wait": "1ms"}`)
	q := decode[api.RequestResponse](t, a)
	if a.status != 202 || q.Request.ID != "r-1" || q.Request.Position != 1 {
		t.Fatalf("queued: %d %s", a.status, a.body)
	}
	if a := f.json(t, "GET", "/v1/requests/r-1", ""); a.status != 200 {
		t.Fatalf("get request: %d %s", a.status, a.body)
	}
	if a := f.json(t, "DELETE", "/v1/requests/r-1", ""); a.status != 204 {
		t.Fatalf("cancel: %d %s", a.status, a.body)
	}
}

func TestOperationalEndpoints(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/healthz", "/readyz", "/version"} {
		if a := f.json(t, "GET", p, ""); a.status != 200 {
			t.Errorf("%s: %d %s", p, a.status, a.body)
		}
	}
	v := decode[map[string]any](t, f.json(t, "GET", "/version", ""))
	for _, k := range []string{"version", "commit", "goVersion", "schemaVersion"} {
		if _, ok := v[k]; !ok {
			t.Errorf("/version lacks %q: %v", k, v)
		}
	}
}

// TestBadInput sends what a careless or hostile caller might, and checks
// each gets a 4xx with the JSON error shape naming what is wrong, and that
// nothing changed.
func TestBadInput(t *testing.T) {
	f := newFixture(t)
	if a := f.json(t, "POST", "/v1/leases", `{"type": "vm", "owner": "holder"}`); a.status != 200 {
		t.Fatal(a.status)
	}
	huge := `{"type": "vm", "owner": "` + strings.Repeat("x", api.MaxBodyBytes) + `"}`
	cases := []struct {
		name, method, path, ctype, body string
		status                          int
		code                            berth.ErrorCode
		field                           string
	}{
		{"empty body", "POST", "/v1/leases", "application/json", "", 400, berth.EInvalid, ""},
		{"not json", "POST", "/v1/leases", "application/json", "type=vm", 400, berth.EInvalid, ""},
		{"truncated", "POST", "/v1/leases", "application/json", `{"type": "vm"`, 400, berth.EInvalid, ""},
		{"array", "POST", "/v1/leases", "application/json", `[1,2]`, 400, berth.EInvalid, ""},
		{"trailing data", "POST", "/v1/leases", "application/json", `{"type":"vm","owner":"x"} {}`, 400, berth.EInvalid, ""},
		{"unknown field", "POST", "/v1/leases", "application/json", `{"type": "vm", "owner": "x", "colour": "red"}`, 400, berth.EInvalid, "colour"},
		{"wrong case", "POST", "/v1/leases", "application/json", `{"TYPE": "vm", "owner": "x"}`, 400, berth.EInvalid, "TYPE"},
		{"repeated key", "POST", "/v1/leases", "application/json", `{"type": "vm", "owner": "x", "type": "other"}`, 400, berth.EInvalid, "type"},
		{"unclean path", "GET", "/v1//pools", "", "", 404, berth.ENotFound, ""},
		{"wrong type", "POST", "/v1/leases", "application/json", `{"type": 7, "owner": "x"}`, 400, berth.EInvalid, "type"},
		{"wrong priority type", "POST", "/v1/leases", "application/json", `{"type": "vm", "owner": "x", "priority": "high"}`, 400, berth.EInvalid, "priority"},
		{"bad wait", "POST", "/v1/leases", "application/json", `{"type": "vm", "owner": "x", "wait": "soon"}`, 400, berth.EInvalid, "wait"},
		{"numeric wait", "POST", "/v1/leases", "application/json", `{"type": "vm", "owner": "x", "wait": 30}`, 400, berth.EInvalid, "wait"},
		{"missing owner", "POST", "/v1/leases", "application/json", `{"type": "vm"}`, 400, berth.EInvalid, "owner"},
		{"sql in type", "POST", "/v1/leases", "application/json", `{"type": "vm'; DROP TABLE resources; --", "owner": "x"}`, 404, berth.EUnknownType, "type"},
		{"sql in label", "POST", "/v1/leases", "application/json", `{"type": "vm", "owner": "x", "labels": {"a') OR 1=1 --": "1"}}`, 400, berth.EInvalid, "labels.a') OR 1=1 --"},
		{"label not string", "POST", "/v1/leases", "application/json", `{"type": "vm", "owner": "x", "labels": {"a": 1}}`, 400, berth.EInvalid, "labels"},
		{"xml", "POST", "/v1/leases", "application/xml", `<type>vm</type>`, 400, berth.EInvalid, "Content-Type"},
		{"oversized", "POST", "/v1/leases", "application/json", huge, 413, berth.ETooLarge, ""},
		{"invalid utf-8", "POST", "/v1/leases", "application/json", "{\"type\": \"vm\", \"owner\": \"a\xff\"}", 400, berth.EInvalid, ""},
		{"unknown release field", "POST", "/v1/leases/x/release", "application/json", `{"state": "free"}`, 400, berth.EInvalid, "state"},
		{"bad release target", "POST", "/v1/leases/x/release", "application/json", `{"to": "away"}`, 400, berth.EInvalid, "to"},
		{"heartbeat with body field", "POST", "/v1/leases/x/heartbeat", "application/json", `{"ttl": "1h"}`, 400, berth.EInvalid, "ttl"},
		{"unknown lease", "POST", "/v1/leases/nope/heartbeat", "", "", 404, berth.ENotFound, ""},
		{"unknown lease release", "POST", "/v1/leases/nope/release", "", "", 404, berth.ENotFound, ""},
		{"unknown resource", "GET", "/v1/resources/nope", "", "", 404, berth.ENotFound, ""},
		{"unknown pool", "GET", "/v1/pools/nope", "", "", 404, berth.EUnknownType, ""},
		{"unknown query", "GET", "/v1/resources?colour=red", "", "", 400, berth.EInvalid, "colour"},
		{"repeated query", "GET", "/v1/resources?type=a&type=b", "", "", 400, berth.EInvalid, "type"},
		{"bad limit", "GET", "/v1/resources?limit=-1", "", "", 400, berth.EInvalid, "limit"},
		{"bad health", "GET", "/v1/resources?health=up", "", "", 400, berth.EInvalid, "health"},
		{"bad ready wait", "GET", "/v1/leases/x/ready?wait=2h", "", "", 400, berth.EInvalid, "wait"},
		{"bad since", "GET", "/v1/events?since=yesterday", "", "", 400, berth.EInvalid, "since"},
		{"bad after", "GET", "/v1/events?after=x", "", "", 400, berth.EInvalid, "after"},
		{"bad wait query", "GET", "/v1/events?wait=1y", "", "", 400, berth.EInvalid, "wait"},
		{"malformed query", "GET", "/v1/events?since=%zz", "", "", 400, berth.EInvalid, ""},
		{"bad order", "GET", "/v1/events?order=random", "", "", 400, berth.EInvalid, "order"},
		{"bad name", "GET", "/v1/resources?type=a%20b", "", "", 400, berth.EInvalid, "type"},
		{"wrong method", "DELETE", "/v1/leases", "", "", 405, berth.EMethod, ""},
		{"no such path", "GET", "/v2/leases", "", "", 404, berth.ENotFound, ""},
	}
	before := f.snapshot(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			a := f.do(t, c.method, c.path, c.ctype, body)
			if a.status != c.status {
				t.Fatalf("status %d, want %d: %s", a.status, c.status, a.body)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			var e struct{ Error *berth.Error }
			if err := json.Unmarshal(a.body, &e); err != nil || e.Error == nil {
				t.Fatalf("body is not the JSON error shape: %s", a.body)
			}
			if e.Error.Code != c.code || e.Error.Field != c.field || e.Error.Message == "" {
				t.Fatalf("error = %+v, want code %q field %q", e.Error, c.code, c.field)
			}
		})
	}
	if after := f.snapshot(t); after != before {
		t.Fatalf("bad input changed the store:\nbefore %s\nafter  %s", before, after)
	}
	if a := f.do(t, "DELETE", "/v1/leases", "", nil); a.header.Get("Allow") != "POST" {
		t.Errorf("405 Allow = %q, want POST", a.header.Get("Allow"))
	}
}

// TestSlowBodyIsRefused: a client that promises a body and sends only part
// of it gets a 400 once the body deadline passes, not a held connection.
func TestSlowBodyIsRefused(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng := lease.New(lease.Options{Store: st})
	srv := httptest.NewServer(api.New(api.Options{Engine: eng, BodyReadTimeout: 100 * time.Millisecond}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\""); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 400 || !bytes.Contains(b, []byte("did not arrive within")) {
		t.Fatalf("stalled body: %d %s", res.StatusCode, b)
	}
}

// TestListResourcesStreamsEveryPage: an unlimited listing is read from the
// store a page at a time; it must still return every resource once, in
// (type, name) order, as one JSON document.
func TestListResourcesStreamsEveryPage(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var pools []lease.Pool
	want := 0
	for _, p := range []struct {
		typ string
		n   int
	}{{"a-vm", 1203}, {"b-vm", 500}, {"c-vm", 1}} {
		pool := lease.Pool{Type: p.typ, LeaseTTL: time.Minute}
		for i := range p.n {
			pool.Resources = append(pool.Resources, store.ResourceSpec{Name: fmt.Sprintf("%s-%05d", p.typ, i)})
		}
		pools = append(pools, pool)
		want += p.n
	}
	eng := lease.New(lease.Options{Store: st})
	if _, err := eng.SyncPools(ctx, pools, "test"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(api.Options{Engine: eng, SchemaVersion: sqlite.SchemaVersion()}))
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL + "/v1/resources")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got struct{ Resources []*berth.Resource }
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/resources: %d, %v", res.StatusCode, err)
	}
	if len(got.Resources) != want {
		t.Fatalf("got %d resources, want %d", len(got.Resources), want)
	}
	for i := 1; i < len(got.Resources); i++ {
		a, b := got.Resources[i-1], got.Resources[i]
		if a.Type > b.Type || a.Type == b.Type && a.Name >= b.Name {
			t.Fatalf("resources %d and %d out of order: %s/%s then %s/%s", i-1, i, a.Type, a.Name, b.Type, b.Name)
		}
	}
}

// TestStatusWithOneProcess: with a store only this process uses, it is its
// own leader.
func TestStatusWithOneProcess(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(api.New(api.Options{Engine: lease.New(lease.Options{Store: st}), SchemaVersion: sqlite.SchemaVersion(), Replica: "host/127.0.0.1:1"}))
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got api.Status
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/status: %d, %v", res.StatusCode, err)
	}
	if want := (api.Status{Replica: "host/127.0.0.1:1", Leader: "host/127.0.0.1:1", SchemaVersion: sqlite.SchemaVersion()}); got != want {
		t.Fatalf("status %+v, want %+v", got, want)
	}
}
