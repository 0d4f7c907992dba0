//go:build unix && !linux

package command

import "syscall"

// sysProcAttr puts the program in a process group of its own. Only Linux
// can also have it killed when berth dies.
func sysProcAttr(bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
