package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-ci/berth"
)

// TestSIGTERMFinishesInFlightRequests: a request whose body is still
// arriving when berth is told to stop is served to the end; meanwhile no
// new connection is accepted; berth then exits 0, and the lease that
// request took is in the store for the next process.
func TestSIGTERMFinishesInFlightRequests(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 1, "10m"))
	srv := startServer(t, "--config", cfg, "--data", dir)
	addr := strings.TrimPrefix(srv.URL, "http://")

	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"type": "vm", "owner": "in-flight"}`
	half := len(body) / 2
	// Headers and half the body; the server has begun this request.
	if _, err := fmt.Fprintf(conn, "POST /v1/leases HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:half]); err != nil {
		t.Fatal(err)
	}
	// Until berth has begun the request (read its headers), a SIGTERM
	// would close a connection it has not accepted yet: wait for it, as
	// the gauge of requests in flight counts it (the scrape counts too).
	waitFor(t, "berth to begin the request", func() bool {
		_, body, _ := call(t, "GET", srv.URL+"/metrics", "", "")
		return strings.Contains(body, `berth_requests_in_flight{api="native"} 2`)
	})
	srv.signal(syscall.SIGTERM)
	waitFor(t, "berth to log that it is shutting down", func() bool { return strings.Contains(srv.Log(), "shutting down") })
	// It no longer accepts connections.
	waitFor(t, "new connections to be refused", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	// The rest of the body: the request is answered in full.
	if _, err := conn.Write([]byte(body[half:])); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the in-flight request got no answer: %v", err)
	}
	defer resp.Body.Close()
	var got struct{ Lease berth.Lease }
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&got) != nil || got.Lease.Owner != "in-flight" {
		t.Fatalf("in-flight acquire: %s %+v", resp.Status, got)
	}
	select {
	case <-srv.done:
	case <-time.After(30 * time.Second):
		t.Fatal("berth did not exit after the last request")
	}
	if code := srv.exitCode(); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
	// The lease was kept: the next process serves it.
	next := startServer(t, "--config", cfg, "--data", dir)
	code, b, _ := call(t, "GET", next.URL+"/v1/leases/"+got.Lease.ID, "", "")
	if code != 200 || !strings.Contains(b, `"status":"active"`) {
		t.Fatalf("the lease after the restart: %d %s", code, b)
	}
}
