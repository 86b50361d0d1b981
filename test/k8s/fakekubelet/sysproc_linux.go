package fakekubelet

import "syscall"

// groupProcAttr puts a process in its own process group, so that it and its children are signalled together, and
// has the kernel SIGKILL it if we die without cleaning up.
func groupProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// ttyProcAttr makes a process the leader of a new session (so also of a process group) with the terminal on its
// stdin as controlling terminal, as creack/pty.Start does, plus Pdeathsig.
func ttyProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Setctty: true, Pdeathsig: syscall.SIGKILL}
}
