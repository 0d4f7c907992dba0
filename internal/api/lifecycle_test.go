package api_test

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
)

// extPool is a pool that an outside janitor cleans.
var extPool = lease.Pool{Type: "proj", LeaseTTL: time.Minute, Janitor: lease.JanitorExternal,
	// A failed cleaning waits a millisecond: the claim that waits for it is woken by its timer.
	Clean:     lease.CleanPolicy{MaxAttempts: 2, Backoff: time.Millisecond, MaxBackoff: time.Millisecond},
	Resources: []store.ResourceSpec{{Name: "proj-1"}}}

func TestOutsideJanitor(t *testing.T) {
	f := newFixture(t, extPool)
	l := decode[api.LeaseResponse](t, f.json(t, "POST", "/v1/leases", `{"type": "proj", "owner": "job"}`))
	if a := f.json(t, "POST", "/v1/leases/"+l.Lease.ID+"/release", ""); a.status != 200 || !strings.Contains(string(a.body), `"state":"dirty"`) {
		t.Fatalf("release: %d %s", a.status, a.body)
	}
	a := f.json(t, "POST", "/v1/cleanings", `{"type": "proj", "owner": "janitor-1", "requestId": "c-1"}`)
	c := decode[api.CleaningResponse](t, a)
	if a.status != 200 || c.Lease.Kind != berth.LeaseClean || c.Resource.State != berth.StateCleaning || c.Attempt != 1 {
		t.Fatalf("claim: %d %s", a.status, a.body)
	}
	// A retry gets the same lease; the lease is heartbeated like any other.
	if again := decode[api.CleaningResponse](t, f.json(t, "POST", "/v1/cleanings", `{"type": "proj", "owner": "janitor-1", "requestId": "c-1"}`)); again.Lease.ID != c.Lease.ID {
		t.Fatalf("retried claim got %s, want %s", again.Lease.ID, c.Lease.ID)
	}
	if a := f.json(t, "POST", "/v1/leases/"+c.Lease.ID+"/heartbeat", ""); a.status != 200 {
		t.Fatalf("heartbeat: %d %s", a.status, a.body)
	}
	// Not released as a job's lease.
	if a := f.json(t, "POST", "/v1/leases/"+c.Lease.ID+"/release", ""); a.status != 409 {
		t.Fatalf("release of a cleaning lease: %d %s", a.status, a.body)
	}
	if a := f.json(t, "POST", "/v1/cleanings", `{"type": "proj", "owner": "janitor-2"}`); a.status != 409 || !strings.Contains(string(a.body), "no dirty resource") {
		t.Fatalf("second claim: %d %s", a.status, a.body)
	}
	a = f.json(t, "POST", "/v1/cleanings/"+c.Lease.ID+"/fail", `{"message": "exit status 1", "output": "quota"}`)
	end := decode[api.CleanEndResponse](t, a)
	if a.status != 200 || end.Resource.State != berth.StateDirty || end.Event.Output != "quota" || end.Resource.CleanAttempts != 1 {
		t.Fatalf("fail: %d %s", a.status, a.body)
	}
	c = decode[api.CleaningResponse](t, f.json(t, "POST", "/v1/cleanings", `{"type": "proj", "owner": "janitor-1", "wait": "30s"}`))
	a = f.json(t, "POST", "/v1/cleanings/"+c.Lease.ID+"/finish", `{"output": "all clean"}`)
	end = decode[api.CleanEndResponse](t, a)
	if a.status != 200 || end.Resource.State != berth.StateFree || end.Event.Reason != "cleaned" {
		t.Fatalf("finish: %d %s", a.status, a.body)
	}
	// A retried finish changes nothing and says so; a fail after it is
	// a conflict.
	a = f.json(t, "POST", "/v1/cleanings/"+c.Lease.ID+"/finish", "")
	if end := decode[api.CleanEndResponse](t, a); a.status != 200 || !end.AlreadyEnded {
		t.Fatalf("finish again: %d %s", a.status, a.body)
	}
	if a := f.json(t, "POST", "/v1/cleanings/"+c.Lease.ID+"/fail", `{"message": "late"}`); a.status != 409 || !strings.Contains(string(a.body), "as cleaned") {
		t.Fatalf("fail after finish: %d %s", a.status, a.body)
	}
	a = f.json(t, "GET", "/v1/events?resource=proj-1&kind=janitor", "")
	evs := decode[struct{ Events []*berth.Event }](t, a)
	if len(evs.Events) != 4 || evs.Events[1].Output != "quota" || evs.Events[3].Output != "all clean" {
		t.Fatalf("janitor events: %s", a.body)
	}
}

func TestAdminOperations(t *testing.T) {
	f := newFixture(t, extPool)
	held := decode[api.LeaseResponse](t, f.json(t, "POST", "/v1/leases", `{"type": "vm", "owner": "job", "labels": {"zone": "a"}}`))
	a := f.json(t, "POST", "/v1/resources/vm-1/quarantine", `{"reason": "fan failure", "actor": "ops"}`)
	q := decode[api.AdminResponse](t, a)
	if a.status != 200 || q.Resource.State != berth.StateQuarantined || q.RevokedLease == nil || q.RevokedLease.ID != held.Lease.ID {
		t.Fatalf("quarantine: %d %s", a.status, a.body)
	}
	if a := f.json(t, "POST", "/v1/leases/"+held.Lease.ID+"/heartbeat", ""); a.status != 410 || !strings.Contains(string(a.body), "revoked") {
		t.Fatalf("heartbeat of the revoked lease: %d %s", a.status, a.body)
	}
	if a := f.json(t, "POST", "/v1/resources/vm-1/quarantine", `{"reason": "again"}`); !decode[api.AdminResponse](t, a).Unchanged {
		t.Fatalf("quarantine twice: %s", a.body)
	}
	a = f.json(t, "POST", "/v1/resources/vm-1/unquarantine", `{"reason": "fan replaced"}`)
	if u := decode[api.AdminResponse](t, a); a.status != 200 || u.Resource.State != berth.StateFree {
		t.Fatalf("unquarantine in a pool without a janitor: %d %s", a.status, a.body)
	}
	if a := f.json(t, "POST", "/v1/resources/vm-1/drain", `{"reason": "kernel"}`); a.status != 200 || !decode[api.AdminResponse](t, a).Resource.Draining {
		t.Fatalf("drain: %d %s", a.status, a.body)
	}
	if a := f.json(t, "POST", "/v1/leases", `{"type": "vm", "owner": "job", "labels": {"zone": "a"}}`); a.status != 409 {
		t.Fatalf("acquire of a drained resource: %d %s", a.status, a.body)
	}
	if a := f.json(t, "POST", "/v1/resources/vm-1/undrain", ""); a.status != 200 || decode[api.AdminResponse](t, a).Resource.Draining {
		t.Fatalf("undrain: %d %s", a.status, a.body)
	}
	a = f.json(t, "POST", "/v1/pools/vm/drain", `{"reason": "migration"}`)
	if d := decode[api.PoolDrainResponse](t, a); a.status != 200 || !d.Pool.Draining || d.Pool.Leasable != 0 {
		t.Fatalf("drain pool: %d %s", a.status, a.body)
	}
	if a := f.json(t, "POST", "/v1/pools/vm/undrain", ""); a.status != 200 || decode[api.PoolDrainResponse](t, a).Pool.Draining {
		t.Fatalf("undrain pool: %d %s", a.status, a.body)
	}
	a = f.json(t, "POST", "/v1/resources", `{"name": "vm-9", "type": "vm", "userData": {"ip": "10.9.9.9"}, "labels": {"zone": "b"}}`)
	if r := decode[api.AdminResponse](t, a); a.status != 201 || r.Resource.Source != berth.SourceAPI || r.Resource.UserData["ip"] != "10.9.9.9" {
		t.Fatalf("add: %d %s", a.status, a.body)
	}
	if a := f.json(t, "POST", "/v1/resources/vm-9/retire", `{"reason": "done"}`); a.status != 200 || decode[api.AdminResponse](t, a).Resource != nil {
		t.Fatalf("retire: %d %s", a.status, a.body)
	}
	a = f.json(t, "GET", "/v1/events?kind=admin&actor=ops", "")
	if evs := decode[struct{ Events []*berth.Event }](t, a); len(evs.Events) != 1 || evs.Events[0].Reason != "quarantined" {
		t.Fatalf("admin events of ops: %s", a.body)
	}
}

// TestLifecycleBadInput: every new endpoint refuses what is wrong with a
// 4xx JSON error naming the field, and changes nothing.
func TestLifecycleBadInput(t *testing.T) {
	f := newFixture(t, extPool)
	long := strings.Repeat("x", 5000)
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     berth.ErrorCode
		field                    string
	}{
		{"claim without type", "POST", "/v1/cleanings", `{"owner": "j"}`, 400, berth.EInvalid, "type"},
		{"claim without owner", "POST", "/v1/cleanings", `{"type": "proj"}`, 400, berth.EInvalid, "owner"},
		{"claim of no pool", "POST", "/v1/cleanings", `{"type": "nope", "owner": "j"}`, 404, berth.EUnknownType, "type"},
		{"claim without janitor", "POST", "/v1/cleanings", `{"type": "vm", "owner": "j"}`, 409, berth.EConflict, ""},
		{"claim bad wait", "POST", "/v1/cleanings", `{"type": "proj", "owner": "j", "wait": "later"}`, 400, berth.EInvalid, "wait"},
		{"claim negative wait", "POST", "/v1/cleanings", `{"type": "proj", "owner": "j", "wait": "-1s"}`, 400, berth.EInvalid, "wait"},
		{"claim bad name", "POST", "/v1/cleanings", `{"type": "proj", "owner": "j", "name": "a b"}`, 400, berth.EInvalid, "name"},
		{"claim bad request id", "POST", "/v1/cleanings", `{"type": "proj", "owner": "j", "requestId": "a/b"}`, 400, berth.EInvalid, "requestId"},
		{"claim unknown field", "POST", "/v1/cleanings", `{"type": "proj", "owner": "j", "state": "dirty"}`, 400, berth.EInvalid, "state"},
		{"claim empty", "POST", "/v1/cleanings", ``, 400, berth.EInvalid, ""},
		{"finish no lease", "POST", "/v1/cleanings/nope/finish", ``, 404, berth.ENotFound, ""},
		{"fail without message", "POST", "/v1/cleanings/nope/fail", `{"output": "x"}`, 400, berth.EInvalid, "message"},
		{"fail long message", "POST", "/v1/cleanings/nope/fail", `{"message": "` + long + `"}`, 400, berth.EInvalid, "message"},
		{"fail wrong type", "POST", "/v1/cleanings/nope/fail", `{"message": "x", "quarantine": "yes"}`, 400, berth.EInvalid, "quarantine"},
		{"finish unknown field", "POST", "/v1/cleanings/nope/finish", `{"ok": true}`, 400, berth.EInvalid, "ok"},
		{"quarantine without reason", "POST", "/v1/resources/vm-1/quarantine", ``, 400, berth.EInvalid, "reason"},
		{"quarantine long reason", "POST", "/v1/resources/vm-1/quarantine", `{"reason": "` + long + `"}`, 400, berth.EInvalid, "reason"},
		{"quarantine no resource", "POST", "/v1/resources/nope/quarantine", `{"reason": "x"}`, 404, berth.ENotFound, ""},
		{"quarantine bad actor", "POST", "/v1/resources/vm-1/quarantine", `{"reason": "x", "actor": "a\u0007"}`, 400, berth.EInvalid, "actor"},
		{"unquarantine free resource", "POST", "/v1/resources/vm-1/unquarantine", `{"reason": "x"}`, 409, berth.EConflict, ""},
		{"unquarantine bad target", "POST", "/v1/resources/vm-1/unquarantine", `{"reason": "x", "to": "busy"}`, 400, berth.EInvalid, "to"},
		{"unquarantine to dirty without janitor", "POST", "/v1/resources/vm-1/unquarantine", `{"reason": "x", "to": "dirty"}`, 400, berth.EInvalid, "to"},
		{"drain without reason", "POST", "/v1/resources/vm-1/drain", `{}`, 400, berth.EInvalid, "reason"},
		{"drain field", "POST", "/v1/resources/vm-1/drain", `{"reason": "x", "pool": "vm"}`, 400, berth.EInvalid, "pool"},
		{"drain no pool", "POST", "/v1/pools/nope/drain", `{"reason": "x"}`, 404, berth.EUnknownType, "type"},
		{"drain pool without reason", "POST", "/v1/pools/vm/drain", ``, 400, berth.EInvalid, "reason"},
		{"add without name", "POST", "/v1/resources", `{"type": "vm"}`, 400, berth.EInvalid, "name"},
		{"add bad name", "POST", "/v1/resources", `{"name": "../etc", "type": "vm"}`, 400, berth.EInvalid, "name"},
		{"add without type", "POST", "/v1/resources", `{"name": "vm-9"}`, 400, berth.EInvalid, "type"},
		{"add to no pool", "POST", "/v1/resources", `{"name": "vm-9", "type": "nope"}`, 404, berth.EUnknownType, "type"},
		{"add existing", "POST", "/v1/resources", `{"name": "vm-1", "type": "vm"}`, 409, berth.EConflict, "name"},
		{"add bad label", "POST", "/v1/resources", `{"name": "vm-9", "type": "vm", "labels": {"a b": "c"}}`, 400, berth.EInvalid, "labels"},
		{"add user data not string", "POST", "/v1/resources", `{"name": "vm-9", "type": "vm", "userData": {"port": 443}}`, 400, berth.EInvalid, "userData"},
		{"add sql name", "POST", "/v1/resources", `{"name": "x'); DROP TABLE resources; --", "type": "vm"}`, 400, berth.EInvalid, "name"},
		{"retire config resource", "POST", "/v1/resources/vm-1/retire", ``, 409, berth.EConflict, ""},
		{"retire no resource", "POST", "/v1/resources/nope/retire", ``, 404, berth.ENotFound, ""},
		{"bad kind query", "GET", "/v1/events?kind=a%20b", ``, 400, berth.EInvalid, "kind"},
		{"unknown kind", "GET", "/v1/events?kind=bogus", ``, 400, berth.EInvalid, "kind"},
		{"quarantine with to", "POST", "/v1/resources/vm-1/quarantine", `{"reason": "x", "to": "free"}`, 400, berth.EInvalid, "to"},
		{"drain with to", "POST", "/v1/resources/vm-1/drain", `{"reason": "x", "to": "free"}`, 400, berth.EInvalid, "to"},
		{"cleanings wrong method", "GET", "/v1/cleanings", ``, 405, berth.EMethod, ""},
		// PostgreSQL cannot store a NUL in text: refused everywhere, so
		// that neither store answers 5xx for it.
		{"quarantine NUL reason", "POST", "/v1/resources/vm-1/quarantine", `{"reason": "r\u0000x"}`, 400, berth.EInvalid, "reason"},
		{"drain pool NUL reason", "POST", "/v1/pools/vm/drain", `{"reason": "r\u0000x"}`, 400, berth.EInvalid, "reason"},
		{"add NUL user data", "POST", "/v1/resources", `{"name": "vm-9", "type": "vm", "userData": {"k": "a\u0000b"}}`, 400, berth.EInvalid, "userData"},
		{"add NUL label", "POST", "/v1/resources", `{"name": "vm-9", "type": "vm", "labels": {"k": "a\u0000b"}}`, 400, berth.EInvalid, "labels.k"},
		{"fail NUL message", "POST", "/v1/cleanings/nope/fail", `{"message": "m\u0000"}`, 400, berth.EInvalid, "message"},
		{"release NUL reason", "POST", "/v1/leases/nope/release", `{"to": "broken", "reason": "r\u0000x"}`, 400, berth.EInvalid, "reason"},
	}
	before := f.snapshot(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			a := f.do(t, c.method, c.path, "application/json", body)
			if a.status != c.status {
				t.Fatalf("status %d, want %d: %s", a.status, c.status, a.body)
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
}
