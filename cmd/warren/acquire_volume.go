package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"

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

// VolumeOptions are the flags of `warren acquire volume`; Validate returns the listing or the export to run
// (volume.PrintList, volume.Export).
type VolumeOptions struct {
	export volume.ExportConfig // flags bound to its fields where the types match
	list   bool
	format string
	redact stringList
	rest   []string // arguments: none are taken
	log    logOptions
}

// volumeRun is a `warren acquire volume`: a listing of export.Volume in format, or the export.
type volumeRun struct {
	list   bool
	format string
	export volume.ExportConfig
}

// NewVolumeOptions returns the options with the library's defaults.
func NewVolumeOptions() *VolumeOptions {
	return &VolumeOptions{export: volume.ExportConfig{Volume: volume.DefaultConfig()}, format: volume.FormatTable}
}

// AddFlags binds the options to fs.
func (o *VolumeOptions) AddFlags(fs *flag.FlagSet) {
	v, e, a := &o.export.Volume, &o.export, &o.export.Acquire
	fs.StringVar(&v.Root, "root", "", "the mounted node volume or snapshot (or a containerd root)")
	fs.StringVar(&v.ContainerdRoot, "containerd-root", "", "containerd's root relative to --root, when it is not at a known place")
	fs.DurationVar(&v.LockWait, "lock-wait", v.LockWait, "how long to wait for a meta.db that another process (a running containerd) holds locked")
	fs.BoolVar(&o.list, "list", false, "list the namespaces, containers and images")
	fs.StringVar(&o.format, "o", o.format, "--list output: table or json")
	fs.StringVar(&e.Container, "container", "", "the container to export: its id (or a unique prefix, or containerd://ID)")
	fs.StringVar(&e.Namespace, "namespace", "", "containerd namespace of the container (Kubernetes: k8s.io); default: the one that has it")
	fs.StringVar(&e.Out, "out", "", "output directory (created if missing)")
	fs.StringVar(&e.SigningKeyFile, "signing-key", "", "the examiner's Ed25519 key (signing.key from warren keygen): signs the statement")
	fs.StringVar(&a.Case, "case", "", "case id, in the statement")
	fs.StringVar(&a.Examiner, "examiner", "", "examiner's name, in the statement")
	fs.StringVar(&a.Cluster, "cluster", "", "the cluster the node belonged to, in the statement")
	fs.StringVar(&a.Node, "node", "", "the node's name, in the statement")
	fs.Var(&o.redact, "redact-env", "a regular expression of environment variable names whose values are redacted in the container's record, besides the defaults; repeat for several")
	o.log.addFlags(fs)
}

// ParseArgs parses flags anywhere on the command line, keeping the arguments for Validate to refuse.
func (o *VolumeOptions) ParseArgs(fs *flag.FlagSet, args []string) (err error) {
	o.rest, err = parseInterleaved(fs, args)
	return err
}

// Validate checks the flags together and returns the listing or export to run. It reads nothing of the volume.
func (o *VolumeOptions) Validate() (volumeRun, error) {
	r := volumeRun{list: o.list, format: o.format, export: o.export}
	log, err := o.log.logger()
	if err != nil {
		return r, err
	}
	e := &r.export
	switch {
	case len(o.rest) > 0:
		return r, usageErr("unexpected argument %q: give the container with --container ID", o.rest[0])
	case e.Volume.Root == "":
		return r, usageErr("missing --root: the directory where the node's volume is mounted, e.g. --root /mnt/node")
	case o.list && e.Container != "":
		return r, usageErr("give --list or --container, not both")
	case !o.list && e.Container == "":
		return r, usageErr("missing --container ID (or --list to see the containers)")
	case o.format != volume.FormatTable && o.format != volume.FormatJSON:
		return r, usageErr("-o %q: want table or json", o.format)
	}
	if !o.list {
		if e.Out == "" {
			return r, usageErr("missing --out: the output directory, e.g. --out ./case-42")
		}
		if strings.HasPrefix(e.Out, "s3://") {
			return r, usageErr("--out s3:// is not available in this build: give a local directory")
		}
		if e.SigningKeyFile == "" {
			return r, usageErr("missing --signing-key: the examiner's key (warren keygen --out DIR writes DIR/signing.key)")
		}
	}
	for _, s := range o.redact {
		re, err := regexp.Compile("(?i)" + s)
		if err != nil {
			return r, usageErr("--redact-env %q: %v", s, err)
		}
		e.Acquire.RedactEnv = append(e.Acquire.RedactEnv, re)
	}
	e.Volume.Logger = log
	e.Acquire.Version = version
	return r, nil
}

// runAcquireVolume implements `warren acquire volume`: volume.PrintList (--list) or volume.Export.
func runAcquireVolume(args []string, stdout, stderr io.Writer) error {
	c := cli{name: "warren acquire volume", usage: volumeUsage + "\nflags of warren acquire volume:\n", signals: true}
	return runOptions(c, NewVolumeOptions(), args, stderr, func(ctx context.Context, r volumeRun) error {
		if r.list {
			// A listing leaves nothing to clean up: a signal ends it at once, as the default action would.
			signal.Reset(os.Interrupt, syscall.SIGTERM)
			return volume.PrintList(r.export.Volume, r.format, stdout)
		}
		r.export.Progress = stderr // a line every 5 s while the archive grows
		return volume.Export(ctx, r.export, stdout)
	})
}
