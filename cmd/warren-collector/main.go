// Command warren-collector is the in-container half of warren acquire: streamed into a container over exec stdin
// by collector.Collect (collect), or started by the container runtime as an ephemeral container's or the node
// mode's pod's entrypoint (ephemeral, node: it waits for the acquirer on stdin and seals its stream), it hashes its
// own executable, then writes one tar stream of evidence to stdout (see package collector). It is built static for
// linux/amd64 and linux/arm64 by make build; its flags are the driver's, not a user interface.
package main

import (
	"os"

	"github.com/warren-dev/warren/collector"
)

func main() { os.Exit(collector.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
