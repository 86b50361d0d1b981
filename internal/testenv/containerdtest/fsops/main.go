// Command fsops changes the file system it runs in, operation by operation, for tests that need a container to
// write into its writable layer (internal/testenv/containerdtest builds it static and plants it in an image):
//
//	fsops write PATH CONTENT | append PATH CONTENT | rm PATH | rmrf PATH | mkdir PATH | chmod OCTAL PATH |
//	      symlink TARGET PATH | mv OLD NEW | socket PATH | wait ...
//
// wait prints "fsops: waiting" and blocks until SIGTERM or SIGINT: a container that keeps running.
//
// It stops at the first failing operation with exit status 1.
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	args := os.Args[1:]
	arity := map[string]int{"write": 2, "append": 2, "rm": 1, "rmrf": 1, "mkdir": 1, "chmod": 2, "symlink": 2, "mv": 2, "socket": 1, "wait": 0}
	for len(args) > 0 {
		op := args[0]
		n, ok := arity[op]
		if !ok || len(args) < 1+n {
			fail(fmt.Errorf("bad operation %q (or too few arguments)", op))
		}
		a := args[1 : 1+n]
		args = args[1+n:]
		var err error
		switch op {
		case "write":
			err = os.WriteFile(a[0], []byte(a[1]), 0o644)
		case "append":
			var f *os.File
			if f, err = os.OpenFile(a[0], os.O_WRONLY|os.O_APPEND, 0); err == nil {
				_, err = f.WriteString(a[1])
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
		case "rm":
			err = os.Remove(a[0])
		case "rmrf":
			err = os.RemoveAll(a[0])
		case "mkdir":
			err = os.Mkdir(a[0], 0o755)
		case "chmod":
			var m uint64
			if m, err = strconv.ParseUint(a[0], 8, 32); err == nil {
				err = os.Chmod(a[1], os.FileMode(m))
			}
		case "symlink":
			err = os.Symlink(a[0], a[1])
		case "mv":
			err = os.Rename(a[0], a[1])
		case "wait":
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			fmt.Println("fsops: waiting")
			<-sig
		case "socket": // a unix socket left behind, as a daemon that dies leaves it
			var l *net.UnixListener
			if l, err = net.ListenUnix("unix", &net.UnixAddr{Name: a[0], Net: "unix"}); err == nil {
				l.SetUnlinkOnClose(false)
				err = l.Close()
			}
		}
		if err != nil {
			fail(fmt.Errorf("%s %v: %w", op, a, err))
		}
	}
	fmt.Println("fsops: done")
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "fsops:", err)
	os.Exit(1)
}
