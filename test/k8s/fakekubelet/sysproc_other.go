//go:build !linux

package fakekubelet

import "syscall"

// groupProcAttr puts a process in its own process group, so that it and its children are signalled together.
func groupProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// ttyProcAttr makes a process the leader of a new session with the terminal on its stdin as controlling terminal.
func ttyProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Setctty: true}
}
