package command

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// superviseSupported: Linux can have the kernel signal a process when its
// parent dies.
const superviseSupported = true

// sysProcAttr puts the program in a process group of its own and, when
// supervised, has the kernel send it SIGTERM when the thread that started
// it (locked by Run) ends: when berth dies. The supervising shell then
// kills the group.
func sysProcAttr(supervised bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if supervised {
		a.Pdeathsig = syscall.SIGTERM
	}
	return a
}

// groupLives reports whether a process of group pgid is still alive (a
// zombie is not: it is dead, only not yet reaped by its new parent).
func groupLives(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false // cannot tell; the group was sent SIGKILL
	}
	want := strconv.Itoa(pgid)
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp …; comm may hold spaces and parens.
		rest := string(b)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) >= 3 && f[2] == want && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}
