package testproc

import "syscall"

// sysProcAttr puts each child in its own process group, so a terminal's Ctrl-C reaches only us and we stop the
// children in order (apiserver before etcd), and asks the kernel to SIGKILL the child when we die.
//
// Pdeathsig fires when the OS thread that forked the child exits, not the process. The Go runtime does not retire
// threads except those locked with runtime.LockOSThread whose goroutine exits; Start is never called from such a
// goroutine in our tests, so in practice the signal comes when the test binary dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
