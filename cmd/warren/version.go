package main

import (
	"context"
	"flag"
	"fmt"
	"io"
)

// version is set at build time: go build -ldflags "-X main.version=...".
var version = "dev"

// VersionOptions are the (no) flags of `warren version`.
type VersionOptions struct{}

// AddFlags binds nothing: version has no flags.
func (*VersionOptions) AddFlags(*flag.FlagSet) {}

// ParseArgs ignores args: `warren version` prints the version whatever follows it, --help included, as it always
// has.
func (*VersionOptions) ParseArgs(*flag.FlagSet, []string) error { return nil }

// Validate has nothing to check.
func (*VersionOptions) Validate() (string, error) { return version, nil }

// runVersion implements `warren version`.
func runVersion(args []string, stdout, stderr io.Writer) error {
	return runOptions(cli{name: "warren version"}, &VersionOptions{}, args, stderr, func(_ context.Context, v string) error {
		fmt.Fprintln(stdout, v)
		return nil
	})
}
