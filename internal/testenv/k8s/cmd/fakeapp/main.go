// Command fakeapp is the program of fakekubelet's distroless image (scripts/rootfs.sh): an application with no shell
// around it, so that a test can see what an examiner meets in such a container.
//
// It writes each file given as -write PATH=CONTENT (creating its directories), so a test can plant evidence where no
// shell could, then waits for SIGTERM or SIGINT and exits 0.
//
//	fakeapp [-write /var/lib/app/key=secret]...
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

type writes []string

func (w *writes) String() string     { return strings.Join(*w, " ") }
func (w *writes) Set(v string) error { *w = append(*w, v); return nil }

func main() {
	var files writes
	flag.Var(&files, "write", "PATH=CONTENT: write CONTENT to PATH before waiting (repeatable)")
	flag.Parse()
	for _, f := range files {
		path, content, ok := strings.Cut(f, "=")
		if !ok || !filepath.IsAbs(path) {
			fmt.Fprintf(os.Stderr, "fakeapp: -write %q: want /ABSOLUTE/PATH=CONTENT\n", f)
			os.Exit(2)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "fakeapp: %v\n", err)
			os.Exit(1)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "fakeapp: %v\n", err)
			os.Exit(1)
		}
	}
	fmt.Println("fakeapp: running")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("fakeapp: %v, exiting\n", <-sig)
}
