// Command devcluster runs a real Kubernetes control plane (etcd and kube-apiserver, see internal/testenv/kubetest) on
// loopback until it gets SIGINT or SIGTERM. It is for demos and manual testing:
//
//	go run ./internal/testenv/cmd/devcluster --dir DIR
//
// Once the cluster is ready it writes DIR/env, shell assignments to source:
//
//	KUBE_URL=https://127.0.0.1:PORT  KUBE_CA=...  ADMIN_KUBECONFIG=...  CONNECTOR_KUBECONFIG=...  KUBECTL=...
//	AUDIT_LOG=...
//
// and prints "ready" on stdout. The processes' output goes to DIR/cluster.log. On SIGINT or SIGTERM it stops the
// cluster and exits 0; if etcd or kube-apiserver dies on its own, it exits 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/warren-dev/warren/internal/testenv/kubetest"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "devcluster: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devcluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "work directory for certificates, kubeconfigs, etcd data, logs and the env file (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("usage: devcluster --dir DIR")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("failed to create %s: %w", *dir, err)
	}
	logPath := filepath.Join(*dir, "cluster.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("failed to create the log: %w", err)
	}
	defer logFile.Close()

	// Signals arriving during the start cancel it; after it, they ask for a clean stop.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := kubetest.Start(ctx, kubetest.Options{Dir: *dir, Logger: logFile})
	if err != nil {
		return fmt.Errorf("%w\n(full output in %s)", err, logPath)
	}
	envPath := filepath.Join(*dir, "env")
	if err := writeEnv(envPath, c); err != nil {
		return errors.Join(err, c.Stop())
	}
	fmt.Fprintf(stderr, "devcluster: kube-apiserver at %s, ready in %s; env in %s, output in %s\n",
		c.URL, c.StartDuration.Round(time.Millisecond), envPath, logPath)
	fmt.Fprintln(stdout, "ready")

	select {
	case <-ctx.Done():
		fmt.Fprintln(stderr, "devcluster: stopping")
		return c.Stop()
	case <-c.Done():
		err := c.Stop() // says which process died and how
		if err == nil {
			err = errors.New("the control plane stopped on its own")
		}
		return fmt.Errorf("%w\n(full output in %s)", err, logPath)
	}
}

// writeEnv writes the cluster's coordinates as shell assignments, atomically so a reader never sees half a file.
func writeEnv(path string, c *kubetest.Cluster) error {
	var sb strings.Builder
	for _, kv := range [][2]string{
		{"KUBE_URL", c.URL},
		{"KUBE_CA", c.CAFile},
		{"ADMIN_KUBECONFIG", c.AdminKubeconfig},
		{"CONNECTOR_KUBECONFIG", c.ConnectorKubeconfig},
		{"KUBECTL", c.KubectlPath},
		{"AUDIT_LOG", c.AuditLog},
	} {
		fmt.Fprintf(&sb, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(sb.String()), 0o600); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

// shellQuote returns s unchanged when the shell reads it literally, else in single quotes.
func shellQuote(s string) string {
	safe := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/.:_-+=,@%", r))
	}) < 0
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
