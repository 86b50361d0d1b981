package collector

import (
	"flag"
	"fmt"
	"io"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// Archive paths of the collector's own metadata.
const (
	SelfPath     = "collector/self.json"     // first entry: who ran, its self-hash
	SkippedPath  = "collector/skipped.json"  // everything not collected, with reasons
	ManifestPath = "collector/manifest.json" // last entry: every earlier entry with its size and SHA-256
)

// SelfInfo is collector/self.json. In shell mode the driver writes it (Mode "shell", no SHA256).
type SelfInfo struct {
	Mode    string `json:"mode"`
	Version string `json:"version,omitempty"`
	// SHA256 is the hex SHA-256 of /proc/self/exe, read before anything else.
	SHA256  string    `json:"sha256,omitempty"`
	Exe     string    `json:"exe,omitempty"` // the path it ran from (escaped)
	PID     int       `json:"pid,omitempty"`
	UID     int       `json:"uid"`
	GID     int       `json:"gid"`
	Arch    string    `json:"arch,omitempty"`
	Args    []string  `json:"args,omitempty"`
	Started time.Time `json:"started"`
	// Removed says whether the collector unlinked its own file at its start ("" when not asked).
	Removed string `json:"removed,omitempty"`
	// Reason is the shell mode's reason.
	Reason string `json:"reason,omitempty"`
	// Target is how a collector the runtime started (ephemeral, node) found its target; nil in exec mode.
	Target *TargetView `json:"target,omitempty"`
}

// Manifest is collector/manifest.json: every entry before it, in stream order.
type Manifest struct {
	Files []File    `json:"files"`
	Ended time.Time `json:"ended"`
}

// version is set by make build (-X, the same VERSION as warren's: git describe --tags --always --dirty).
var version string

// Version is the collector's version: what make build stamped, else the main module's version as the go command
// recorded it.
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "" {
		return "unknown"
	}
	return bi.Main.Version
}

// collectorArgs is the argv tail the driver gives the collector binary (after "collect").
func collectorArgs(o Options, removeSelf bool) []string {
	a := commonArgs(o)
	a = append(a, "--root="+o.Root, "--proc="+o.Proc, "--root-pid="+strconv.Itoa(o.RootPID))
	for _, p := range o.PIDs {
		a = append(a, "--pid="+strconv.Itoa(p))
	}
	if removeSelf {
		a = append(a, "--remove-self")
	}
	return a
}

// commonArgs are the flags of every way the collector runs: what to collect and the bounds, not where.
func commonArgs(o Options) []string {
	a := []string{
		"--profile=" + o.Profile,
		"--max-bytes=" + strconv.FormatInt(o.MaxBytes, 10),
		"--max-file-bytes=" + strconv.FormatInt(o.MaxFileBytes, 10),
		"--max-tmp-file-bytes=" + strconv.FormatInt(o.MaxTmpFileBytes, 10),
		"--max-exe-bytes=" + strconv.FormatInt(o.MaxExeBytes, 10),
		"--time-budget=" + o.TimeBudget.String(),
	}
	for _, re := range o.RedactEnv {
		a = append(a, "--redact-env="+re.String())
	}
	if o.CopySecrets {
		a = append(a, "--copy-secrets")
	}
	if o.HashRedactedOriginals {
		a = append(a, "--hash-redacted-originals")
	}
	for _, r := range o.BodyfileRoots {
		a = append(a, "--bodyfile-root="+r)
	}
	for _, x := range o.Exclude {
		a = append(a, "--exclude="+x)
	}
	if !o.RecentSince.IsZero() {
		a = append(a, "--recent-since="+o.RecentSince.UTC().Format(time.RFC3339Nano))
	}
	return a
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// commonFlags defines commonArgs' flags on fs into o; the returned function finishes o once fs has parsed.
func commonFlags(fs *flag.FlagSet, o *Options) func() error {
	d := DefaultOptions()
	fs.StringVar(&o.Profile, "profile", d.Profile, "triage or full")
	fs.Int64Var(&o.MaxBytes, "max-bytes", d.MaxBytes, "bound on file content stored (negative: none)")
	fs.Int64Var(&o.MaxFileBytes, "max-file-bytes", d.MaxFileBytes, "bound on one copied file")
	fs.Int64Var(&o.MaxTmpFileBytes, "max-tmp-file-bytes", d.MaxTmpFileBytes, "bound on one file from /tmp-like places")
	fs.Int64Var(&o.MaxExeBytes, "max-exe-bytes", d.MaxExeBytes, "bound on one deleted executable copied")
	fs.DurationVar(&o.TimeBudget, "time-budget", d.TimeBudget, "time bound of the collection")
	redact, roots, excl := new(listFlag), new(listFlag), new(listFlag)
	fs.Var(redact, "redact-env", "regexp of environment variable names to redact, added to the defaults (repeatable)")
	fs.Var(roots, "bodyfile-root", "directory to list in the bodyfile (repeatable)")
	fs.Var(excl, "exclude", "subtree not walked (repeatable)")
	fs.BoolVar(&o.CopySecrets, "copy-secrets", false, "copy Secret volumes and credential files")
	fs.BoolVar(&o.HashRedactedOriginals, "hash-redacted-originals", false, "hash environ blocks before redaction")
	recent := fs.String("recent-since", "", "copy files changed at or after this RFC 3339 time (default: container start)")
	return func() error {
		for _, r := range *redact {
			re, err := regexp.Compile(r)
			if err != nil {
				return fmt.Errorf("--redact-env %q: %w", r, err)
			}
			o.RedactEnv = append(o.RedactEnv, re)
		}
		o.BodyfileRoots, o.Exclude = *roots, *excl
		if *roots == nil {
			o.BodyfileRoots = d.BodyfileRoots
		}
		if *excl == nil {
			o.Exclude = d.Exclude
		}
		if *recent != "" {
			var err error
			if o.RecentSince, err = time.Parse(time.RFC3339Nano, *recent); err != nil {
				return fmt.Errorf("--recent-since: %w", err)
			}
		}
		if o.Profile != ProfileTriage && o.Profile != ProfileFull {
			return fmt.Errorf("--profile %q: want triage or full", o.Profile)
		}
		if o.TimeBudget < 0 {
			return fmt.Errorf("--time-budget %v: must not be negative", o.TimeBudget)
		}
		return nil
	}
}

// parseCollectorArgs parses what collectorArgs wrote; unset fields take DefaultOptions.
func parseCollectorArgs(args []string, errOut io.Writer) (o Options, removeSelf bool, err error) {
	d := DefaultOptions()
	fs := flag.NewFlagSet("warren-collector collect", flag.ContinueOnError)
	fs.SetOutput(errOut)
	finish := commonFlags(fs, &o)
	fs.StringVar(&o.Root, "root", d.Root, "the target's root filesystem")
	fs.StringVar(&o.Proc, "proc", d.Proc, "procfs to read processes from")
	fs.IntVar(&o.RootPID, "root-pid", 0, "process whose view stands for the container's (0: self)")
	var pids listFlag
	fs.Var(&pids, "pid", "collect only this process (repeatable)")
	fs.BoolVar(&removeSelf, "remove-self", false, "unlink the collector's own file once it has hashed it")
	if err := fs.Parse(args); err != nil {
		return o, false, err
	}
	if fs.NArg() > 0 {
		return o, false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := finish(); err != nil {
		return o, false, err
	}
	for _, p := range pids {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return o, false, fmt.Errorf("--pid %q: not a process id", p)
		}
		o.PIDs = append(o.PIDs, n)
	}
	return o, removeSelf, nil
}
