package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/volume"
)

const volumeUsage = `usage:
  warren acquire volume --root DIR --list [--containerd-root PATH] [-o table|json]
  warren acquire volume --root DIR --container ID --out DIR --signing-key KEY [--namespace NS] [--containerd-root PATH]
                        [--case ID] [--examiner NAME] [--cluster NAME] [--node NAME] [--redact-env REGEX]

A node's disk, offline. DIR is a mounted node volume or snapshot (an EBS or PD snapshot, a disk image, a stopped
node's root), or a containerd root itself; it is only read, nothing is mounted. containerd's root is found at
var/lib/containerd, var/lib/rancher/k3s/agent/containerd (k3s), var/lib/rancher/rke2/agent/containerd (RKE2) or
local/var/lib/containerd (Bottlerocket), or given with --containerd-root (relative to --root).

--list shows the namespaces, containers (with their snapshot chains) and images. --container exports one container
(its id, a unique prefix of it, or containerd://ID as the kubelet reports it) as evidence in --out's layout:
its file system under container/fs, what it changed against its image under drift/ (drift/changes.json), what
containerd knew under volume/, signed like every acquisition (warren acquire verify checks it).
`

// runAcquireVolume implements `warren acquire volume`.
func runAcquireVolume(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren acquire volume", flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := volume.DefaultConfig()
	var cfg volume.Config
	fs.StringVar(&cfg.Root, "root", "", "the mounted node volume or snapshot (or a containerd root)")
	fs.StringVar(&cfg.ContainerdRoot, "containerd-root", "", "containerd's root relative to --root, when it is not at a known place")
	fs.DurationVar(&cfg.LockWait, "lock-wait", d.LockWait, "how long to wait for a meta.db that another process (a running containerd) holds locked")
	list := fs.Bool("list", false, "list the namespaces, containers and images")
	output := fs.String("o", "table", "--list output: table or json")
	id := fs.String("container", "", "the container to export: its id (or a unique prefix, or containerd://ID)")
	ns := fs.String("namespace", "", "containerd namespace of the container (Kubernetes: k8s.io); default: the one that has it")
	out := fs.String("out", "", "output directory (created if missing)")
	signingKey := fs.String("signing-key", "", "the examiner's Ed25519 key (signing.key from warren keygen): signs the statement")
	var opts volume.AcquireOptions
	fs.StringVar(&opts.Case, "case", "", "case id, in the statement")
	fs.StringVar(&opts.Examiner, "examiner", "", "examiner's name, in the statement")
	fs.StringVar(&opts.Cluster, "cluster", "", "the cluster the node belonged to, in the statement")
	fs.StringVar(&opts.Node, "node", "", "the node's name, in the statement")
	var redact stringList
	fs.Var(&redact, "redact-env", "a regular expression of environment variable names whose values are redacted in the container's record, besides the defaults; repeat for several")
	newLogger := logFlags(fs)
	fs.Usage = func() { fmt.Fprint(fs.Output(), volumeUsage+"\nflags of warren acquire volume:\n"); fs.PrintDefaults() }
	rest, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	log, err := newLogger()
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usageErr("unexpected argument %q: give the container with --container ID", rest[0])
	case cfg.Root == "":
		return usageErr("missing --root: the directory where the node's volume is mounted, e.g. --root /mnt/node")
	case *list && *id != "":
		return usageErr("give --list or --container, not both")
	case !*list && *id == "":
		return usageErr("missing --container ID (or --list to see the containers)")
	case *output != "table" && *output != "json":
		return usageErr("-o %q: want table or json", *output)
	}
	if !*list {
		if *out == "" {
			return usageErr("missing --out: the output directory, e.g. --out ./case-42")
		}
		if strings.HasPrefix(*out, "s3://") {
			return usageErr("--out s3:// is not available in this build: give a local directory")
		}
		if *signingKey == "" {
			return usageErr("missing --signing-key: the examiner's key (warren keygen --out DIR writes DIR/signing.key)")
		}
	}
	for _, r := range redact {
		re, err := regexp.Compile("(?i)" + r)
		if err != nil {
			return usageErr("--redact-env %q: %v", r, err)
		}
		opts.RedactEnv = append(opts.RedactEnv, re)
	}
	cfg.Logger = log
	v, err := volume.Open(cfg)
	if err != nil {
		return err
	}
	defer v.Close()
	if *list {
		return printListing(stdout, v.List(), *output)
	}
	c, err := v.Find(*ns, *id)
	if err != nil {
		return err
	}
	if opts.Signer, err = evidence.LoadSigner(*signingKey); err != nil {
		return err
	}
	store, err := evidence.NewLocalStore(*out)
	if err != nil {
		return err
	}
	opts.Store, opts.Version = store, version
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	last := start
	// A line on stderr every 5 s while the archive grows; the callback runs in the writing goroutine.
	opts.Progress = func(written int64) {
		if now := time.Now(); now.Sub(last) >= 5*time.Second {
			last = now
			fmt.Fprintf(stderr, "%s: %s written in %s\n", c.ID, humanBytes(written), now.Sub(start).Round(time.Second))
		}
	}
	res, err := v.Acquire(ctx, c, opts)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("interrupted: nothing complete was written for %s", c.ID)
		}
		return err
	}
	p := res.Statement.Predicate
	fmt.Fprintf(stdout, "acquired containerd://%s (%s) from %s\n", c.ID, c.Image, v.Path)
	fmt.Fprintf(stdout, "  %s: %d files, %s, sha256 %s, in %s\n", store.Location(res.Dir+"/"+evidence.ArchiveName), p.Archive.Files,
		humanBytes(p.Archive.Size), p.Archive.SHA256, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(stdout, "  image layers from %s; drift: %d added, %d changed, %d deleted (%s)\n", res.Method,
		p.Volume.Drift.Added, p.Volume.Drift.Changed, p.Volume.Drift.Deleted, volume.DriftPrefix+"/changes.json")
	for _, s := range p.Skipped {
		fmt.Fprintf(stdout, "  skipped %s: %s: %s\n", s.Path, s.Reason, s.Detail)
	}
	fmt.Fprintf(stdout, "check it with: warren acquire verify %s --key PUB\n", *out)
	return nil
}

func printListing(w io.Writer, l *volume.Listing, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(l)
	}
	fmt.Fprintf(w, "containerd root %s (layout %s), meta.db %s, sha256 %s\n\n", l.Path, l.Layout, humanBytes(l.MetaDB.Size), l.MetaDB.SHA256)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tCONTAINER\tTARGET\tIMAGE\tSNAPSHOTTER\tSNAPSHOTS\tCREATED")
	for _, n := range l.Namespaces {
		for _, c := range n.Containers {
			snaps := fmt.Sprintf("%d", len(c.Chain))
			missing := 0
			for _, s := range c.Chain {
				if !s.Exists {
					missing++
				}
			}
			if missing > 0 {
				snaps += fmt.Sprintf(" (%d missing)", missing)
			}
			if c.Unsupported != "" {
				snaps = "unsupported: " + c.Unsupported
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, c.ID, c.Target, c.Image, c.Snapshotter, snaps, c.CreatedAt.UTC().Format(time.RFC3339))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tIMAGE\tTARGET\tMEDIA TYPE")
	for _, n := range l.Namespaces {
		for _, img := range n.Images {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, img.Name, img.Target.Digest, img.Target.MediaType)
		}
	}
	tw.Flush()
	for _, p := range l.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	return nil
}
