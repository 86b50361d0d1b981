// Command devcert writes a throwaway CA and a TLS server certificate signed by it, for demos and local tests:
//
//	go run ./internal/testenv/cmd/devcert --out DIR [--host 127.0.0.1,localhost]
//
// DIR/ca.crt is what connectors and kubectl trust (--ca-file); DIR/tls.crt and DIR/tls.key are the gateway's.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/warren-dev/warren/internal/testenv/testcert"
)

func main() {
	out := flag.String("out", "", "directory to write ca.crt, tls.crt and tls.key to")
	hosts := flag.String("host", "127.0.0.1,localhost", "comma-separated IPs and DNS names of the server certificate")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "devcert: missing --out DIR")
		os.Exit(2)
	}
	if err := write(*out, strings.Split(*hosts, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "devcert:", err)
		os.Exit(1)
	}
}

func write(dir string, hosts []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := testcert.SelfSigned(testcert.Options{Name: "warren dev CA", CA: true, Valid: 30 * 24 * time.Hour})
	if err != nil {
		return err
	}
	srv, err := ca.Issue(testcert.Options{Name: strings.TrimSpace(hosts[0]), Hosts: hosts, Valid: 30 * 24 * time.Hour})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM(), 0o644); err != nil {
		return err
	}
	return srv.WriteFiles(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
}
