package boskosclient

import (
	"errors"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/boskos/client"
	"sigs.k8s.io/boskos/common"
)

// token makes a berth token in the store under dir and returns the path
// of a password file holding it, as boskosctl --password-file reads it.
func token(t *testing.T, dir, name, role string) string {
	t.Helper()
	out, err := exec.Command(berthBin, "token", "create", name, "--role", role, "--data", dir).Output()
	if err != nil {
		t.Fatalf("berth token create %s: %v", name, err)
	}
	path := filepath.Join(dir, name+".password")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBasicAuthWithTokens: the real Boskos client, given a username and a
// password file as it is for a Boskos behind basic auth, works against a
// berth that asks for tokens; without one it fails plainly instead of
// waiting for ever; and a token may not touch another's resource.
func TestBasicAuthWithTokens(t *testing.T) {
	dir := t.TempDir()
	jobPW := token(t, dir, "job", "client")
	otherPW := token(t, dir, "other", "client")
	dashPW := token(t, dir, "dash", "viewer")
	s := serve(t, "--data", dir, "--auth", "tokens")
	with := func(owner, user, pw string) *client.Client {
		t.Helper()
		c, err := client.NewClient(owner, s.URL, user, pw)
		if err != nil {
			t.Fatal(err)
		}
		c.DistinguishNotFoundVsTypeNotFound = true
		return c
	}
	job := with("job-1", "job", jobPW)
	r, err := job.Acquire("solo", common.Free, common.Busy)
	if err != nil {
		t.Fatalf("Acquire with basic auth: %v", err)
	}
	if err := job.UpdateOne(r.Name, common.Busy, common.UserDataFromMap(map[string]string{"k": "v"})); err != nil {
		t.Fatalf("UpdateOne: %v", err)
	}
	// Another token may not release it, even naming its owner.
	pw, _ := os.ReadFile(otherPW)
	req, _ := http.NewRequest("POST", s.URL+"/release?"+url.Values{"name": {r.Name}, "owner": {"job-1"}, "dest": {"free"}}.Encode(), nil)
	req.SetBasicAuth("other", strings.TrimSpace(string(pw)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another token releases job-1's resource: %s", resp.Status)
	}
	if err := job.ReleaseOne(r.Name, common.Free); err != nil {
		t.Fatalf("ReleaseOne: %v", err)
	}
	// A viewer reads the metric and may not acquire.
	dash := with("dash", "dash", dashPW)
	if _, err := dash.Metric("solo"); err != nil {
		t.Fatalf("Metric as a viewer: %v", err)
	}
	if _, err := dash.Acquire("solo", common.Free, common.Busy); err == nil || errors.Is(err, client.ErrNotFound) || errors.Is(err, client.ErrAlreadyInUse) {
		t.Fatalf("Acquire as a viewer: %v; want a plain failure", err)
	}
	// No credentials: a plain failure, not "in use" (which AcquireWait
	// would wait on for ever).
	anon := newClient(t, s, "anon")
	if _, err := anon.Acquire("solo", common.Free, common.Busy); err == nil || errors.Is(err, client.ErrAlreadyInUse) || errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Acquire without credentials: %v", err)
	}
}
