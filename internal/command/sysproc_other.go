//go:build unix && !linux

package command

import "syscall"

// superviseSupported: only Linux can signal a process when its parent
// dies.
const superviseSupported = false

// sysProcAttr puts the program in a process group of its own.
func sysProcAttr(bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// groupLives cannot tell here: the group was sent SIGKILL.
func groupLives(int) bool { return false }
