package probe

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func execCheck(t *testing.T, ctx context.Context, target *Target, command ...string) Result {
	t.Helper()
	return compileOK(t, Spec{Exec: &ExecSpec{Command: command}}, Env{}).Check(ctx, target)
}

var vm = &Target{
	Name:     "vm-1",
	Type:     "vm",
	UserData: map[string]string{"host": "10.0.0.7", "ssh-port": "2222", "quote": `it's "x"`},
	Labels:   map[string]string{"zone": "b"},
}

func TestExecExitStatus(t *testing.T) {
	t.Parallel()
	wantResult(t, execCheck(t, context.Background(), vm, "sh", "-c", "echo ready"), true, "", "exit status 0: ready")
	wantResult(t, execCheck(t, context.Background(), vm, "sh", "-c", "echo out; echo err >&2; exit 3"), false, ReasonExecFailed, "exit status 3: out\nerr")
	wantResult(t, execCheck(t, context.Background(), vm, "sh", "-c", "kill -9 $$"), false, ReasonExecFailed, "signal: killed")
}

// TestExecOutputTail: the message ends with the last 512 bytes of output,
// marked as cut.
func TestExecOutputTail(t *testing.T) {
	t.Parallel()
	res := execCheck(t, context.Background(), vm, "sh", "-c", `i=0; while [ $i -lt 200 ]; do echo "line $i"; i=$((i+1)); done; exit 1`)
	wantResult(t, res, false, ReasonExecFailed, "exit status 1: …", "line 199")
	if strings.Contains(res.Message, "line 100\n") || len(res.Message) > 600 {
		t.Fatalf("message holds more than the tail: %q", res.Message)
	}
}

func TestExecCouldNotStart(t *testing.T) {
	t.Parallel()
	wantResult(t, execCheck(t, context.Background(), vm, "/nonexistent/probe"), false, ReasonExecFailed,
		"could not start: fork/exec /nonexistent/probe: no such file or directory")
}

func TestExecEnvironmentAndTemplates(t *testing.T) {
	t.Parallel()
	script := `
test "$BERTH_RESOURCE_NAME" = vm-1 || exit 11
test "$BERTH_RESOURCE_TYPE" = vm || exit 12
test "$BERTH_USERDATA_HOST" = 10.0.0.7 || exit 13
test "$BERTH_USERDATA_SSH_PORT" = 2222 || exit 14
test "$BERTH_USERDATA_QUOTE" = "it's \"x\"" || exit 15
test "$1" = 10.0.0.7:2222 || exit 16
test "$2" = b || exit 17
test -n "$PATH" || exit 18
printf '%s' "$BERTH_USERDATA"`
	res := execCheck(t, context.Background(), vm, "sh", "-c", script, "sh", "{{.UserData.host}}:{{index .UserData \"ssh-port\"}}", "{{.Labels.zone}}")
	wantResult(t, res, true, "", `exit status 0: {"host":"10.0.0.7","quote":"it's \"x\"","ssh-port":"2222"}`)

	res = execCheck(t, context.Background(), vm, "ssh", "{{.UserData.user}}@{{.UserData.host}}")
	wantResult(t, res, false, ReasonProbeError, `probe.exec.command[1]: resource vm-1 has no user data key "user"`)
}

// TestExecTimeoutKillsGroup: a command that hangs, with a grandchild
// holding its output open, is killed with its whole process group when the
// probe's timeout ends, and Check returns at once.
func TestExecTimeoutKillsGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "started")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "grandchild")
	started := make(chan struct{})
	go func() {
		// Opening a FIFO for reading blocks until the script opens it
		// for writing, after it started the grandchild.
		f, err := os.Open(fifo)
		if err == nil {
			_, _ = bufio.NewReader(f).ReadString('\n')
			_ = f.Close()
		}
		close(started)
	}()
	script := `sleep 1000 & echo $! > "$1"; echo "grandchild started"; echo go > "$2"; wait`
	res := execCheck(t, timeoutWhen(t, started), vm, "sh", "-c", script, "sh", pidFile, fifo)
	wantResult(t, res, false, ReasonTimeout, "no answer within the probe timeout (the command was still running and was killed): grandchild started")

	// SIGKILL takes effect asynchronously: wait for the grandchild to
	// exit (a pidfd becomes readable then), with a bound far beyond what
	// a kill takes, so a grandchild that was not killed fails the test.
	pid, err := strconv.Atoi(strings.TrimSpace(string(must(os.ReadFile(pidFile)))))
	if err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return // gone already
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 10_000)
	for errors.Is(err, unix.EINTR) {
		n, err = unix.Poll(fds, 10_000)
	}
	if err != nil || n != 1 {
		t.Fatalf("grandchild %d still running (poll: %d, %v)", pid, n, err)
	}
}

// TestExecEscapedGrandchild: a process that left the command's group
// (setsid) and keeps the output open does not hold Check up beyond a short
// grace once the command has exited.
func TestExecEscapedGrandchild(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid")
	}
	dir := t.TempDir()
	release, escaped := filepath.Join(dir, "release"), filepath.Join(dir, "escaped")
	for _, f := range []string{release, escaped} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The escapee tells the command it is out of the group (so the kill
	// at the command's exit cannot reach it), then waits on release, so
	// the test can end it afterwards.
	script := `setsid sh -c 'echo out > "$2"; read x < "$1"' sh "$1" "$2" & read y < "$2"; echo leaving`
	res := execCheck(t, context.Background(), vm, "sh", "-c", script, "sh", release, escaped)
	wantResult(t, res, true, "", "exit status 0: leaving")
	f, err := os.OpenFile(release, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("done\n")
	_ = f.Close()
}
