//go:build !linux

package testproc

import "syscall"

// sysProcAttr: only Linux can tie a child's life to ours; elsewhere Stop must run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
