// Command bench compares warren with the ways people reach a private Kubernetes API today: direct (the physical
// limit on this machine), one plain reverse-proxy hop, an OpenSSH reverse tunnel (ssh -R through a local sshd), and
// rancher/remotedialer. `make bench` runs it; see the README's "Performance" section.
//
// `bench run` is the driver: it starts every other part as a child process (this binary with a role), so that the
// CPU and memory of each can be read from /proc, measures, and prints a markdown table and a JSON file.
// `bench profile` collects CPU and allocation profiles of warren's gateway and connector during the bulk and
// latency phases.
package main

import (
	"fmt"
	"os"
)

var osPid = os.Getpid()

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench run|profile [flags]")
		os.Exit(2)
	}
	roles := map[string]func([]string){
		"run":       runDriver,
		"profile":   runProfile,
		"backend":   runBackend,
		"tcpsource": runTCPSource,
		"revproxy":  runRevProxy,
		"rdserver":  runRDServer,
		"rdclient":  runRDClient,
		"gateway":   runGateway,
		"connector": runConnector,
		"idle":      runIdleConnectors,
		"storm":     runStormConnectors,
	}
	f, ok := roles[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	f(os.Args[2:])
}
