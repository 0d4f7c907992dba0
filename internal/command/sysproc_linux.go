package command

import "syscall"

// sysProcAttr puts the program in a process group of its own and, with
// dieWithBerth, has the kernel kill it when the thread that started it
// (locked by Run) ends: when berth dies.
func sysProcAttr(dieWithBerth bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if dieWithBerth {
		a.Pdeathsig = syscall.SIGKILL
	}
	return a
}
