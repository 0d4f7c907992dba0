package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/berth-ci/berth/client"
)

// berthBin is the binary under test, built once by TestMain.
var berthBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "berth-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	berthBin = filepath.Join(dir, "berth")
	args := []string{"build", "-o", berthBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/berth-ci/berth/cmd/berth")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building berth:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// A race-built binary sleeps a second at exit by default (to let
	// reports print): every CLI call and server stop paid it, most of
	// this package's run time. The processes run as children, whose
	// stderr the tests read, so nothing is lost without it.
	if raceEnabled {
		os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// toxiproxy (the in-process TCP proxy of the database-loss tests)
		// sometimes leaves one goroutine behind when a toxic is removed
		// while data flows: its no-op stage can be caught sending to the
		// removed toxic, a send with no way out (toxics/noop.go). It is the
		// proxy's, in the test process; berth runs in child processes.
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// proc is one running `berth serve`.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	URL  string
	done chan struct{} // closed when the process has exited
	mu   sync.Mutex
	log  bytes.Buffer
}

// startServer runs `berth serve` with args plus a loopback port of its own
// choosing, and returns once it is listening.
func startServer(t *testing.T, args ...string) *proc {
	t.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(berthBin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				addr <- rec.Addr
			}
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("berth serve log:\n%s", p.Log())
		}
	})
	select {
	case a := <-addr:
		p.URL = "http://" + a
	case <-p.done:
		t.Fatalf("berth serve %v exited before listening:\n%s", args, p.Log())
	case <-time.After(60 * time.Second):
		t.Fatalf("berth serve %v not listening after 60s:\n%s", args, p.Log())
	}
	return p
}

func (p *proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill9 kills the server the hard way and waits until it is gone.
func (p *proc) kill9() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// stop asks the server to shut down and waits for it.
func (p *proc) stop() {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Errorf("berth serve did not stop within 30s of SIGTERM")
		p.kill9()
	}
}

func (p *proc) exitCode() int { return p.cmd.ProcessState.ExitCode() }

// writeConfig writes a config file into dir and returns its path.
func writeConfig(t *testing.T, dir, yaml string) string {
	t.Helper()
	path := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func newClient(t *testing.T, o client.Options) *client.Client {
	t.Helper()
	c, err := client.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runCLI runs the berth binary as a shell would and returns its outputs.
func runCLI(t *testing.T, server string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBin, args...)
	cmd.Env = append(os.Environ(), append([]string{"BERTH_SERVER=" + server}, env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("berth %v: %v", args, err)
		}
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func poolYAML(typ string, n int, ttl string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pools:\n  - type: %s\n    leaseTTL: %s\n    resources:\n", typ, ttl)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "      - name: %s-%d\n        userData: {index: \"%d\"}\n", typ, i, i)
	}
	return b.String()
}
