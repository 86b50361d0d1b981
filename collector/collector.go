// Package collector collects forensic evidence from inside a running container over Kubernetes pods/exec, and is
// both halves of that job:
//
//   - the in-container collector (Run), built as the small static binary cmd/warren-collector, which writes one
//     tar stream to its stdout in order of volatility and hashes every file as it reads it;
//   - the acquirer-side driver (Collect), which streams that binary into the container over exec stdin, checks the
//     collector's hash of its own executable against the digest of what it sent before trusting any output, runs
//     it, re-hashes every entry it receives and compares with the collector's manifest, and falls back to a
//     shell-only collection (sh and cat, every byte hashed by the receiver) where no writable, executable place
//     exists in the container.
//
// # What a container needs
//
// Collector mode: a POSIX sh (dash, busybox ash, bash), cat, chmod, and one writable directory that is not mounted
// noexec among Options.TempDirs. Shell mode: sh and cat; readlink (process links: cwd, exe, fds, namespaces) and
// stat (bodyfile metadata) are used when present and recorded as skipped otherwise. A container without sh (a
// distroless image) is refused with ErrNoShell.
//
// # Data from the target never reaches a shell as code
//
// Every script the driver sends is a constant of this package; values from the target (file names, link targets,
// $HOME) come back only as data on stdout and go out again only as exec argv elements, never interpolated into a
// script. Names that are not valid UTF-8 go out octal-escaped and are decoded by printf %b (data, not code).
//
// # Archive paths
//
// Entries are named container/... (what was collected) and collector/... (self.json first, skipped.json and
// manifest.json last). Target file names are arbitrary bytes; archive paths are valid UTF-8: bytes below 0x20, 0x7f,
// '%' and bytes of invalid UTF-8 sequences are written %XX (EscapeName), reversibly.
package collector

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"time"
)

// Exec runs argv in the target container (no shell unless argv starts one), with stdin when not nil, and returns
// when the command has ended. A non-zero exit is an error exposing the code through an ExitStatus() int method
// (client-go's k8s.io/client-go/util/exec ExitError / CodeExitError have it); "executable not found" errors are
// passed through unchanged. Cancelling ctx ends the command.
type Exec func(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) error

// Sink receives the collected entries in order of volatility; body must be read to EOF before the next entry.
// Headers are rebuilt by Collect (a regular file: Name, Size, Mode, ModTime), never the target's own.
type Sink interface {
	WriteEntry(hdr *tar.Header, body io.Reader) error
}

// Profiles.
const (
	ProfileTriage = "triage" // volatile state, configuration, persistence, histories, small /tmp files, bodyfile
	ProfileFull   = "full"   // triage, then every regular file of the root filesystem up to MaxBytes
)

// Methods (Options.Method).
const (
	MethodAuto      = "auto"      // the collector binary where it can run, else shell
	MethodCollector = "collector" // the collector binary or fail
	MethodShell     = "shell"     // sh and cat only
)

// Options configure one collection. DefaultOptions gives the defaults; a zero field takes its default.
type Options struct {
	// Profile is ProfileTriage (default) or ProfileFull.
	Profile string
	// Method is MethodAuto (default), MethodCollector or MethodShell.
	Method string
	// MaxBytes bounds the bytes of file content stored for this target (the collector's own metadata not
	// counted); the file that crosses it is stored truncated and recorded, later ones are skipped with reason
	// max-bytes. 0 means DefaultMaxBytes; negative means no bound.
	MaxBytes int64
	// MaxFileBytes bounds one copied file of the triage sets (configuration, histories, recent files); larger
	// ones are stored truncated (reason size-cap). Default 8 MiB.
	MaxFileBytes int64
	// MaxTmpFileBytes bounds a file copied from /tmp, /var/tmp and /dev/shm (dropped tools are larger than
	// configuration). Default 32 MiB.
	MaxTmpFileBytes int64
	// MaxExeBytes bounds the copy of a deleted executable (/proc/PID/exe when the link says "(deleted)").
	// Default 256 MiB.
	MaxExeBytes int64
	// TimeBudget bounds the collection inside the container; what is not reached in time is skipped with reason
	// time-budget, and the stream still ends with its manifest. Collect gives the whole exchange TimeBudget plus
	// a minute. Default 10 minutes.
	TimeBudget time.Duration
	// RedactEnv are added to DefaultRedactEnv: an environment variable whose name matches any is stored as
	// NAME=<redacted>. Matched against the name only.
	RedactEnv []*regexp.Regexp
	// CopySecrets copies the files of mounted Kubernetes Secret and projected volumes (service-account tokens);
	// by default they are listed (bodyfile) and skipped with reason secret. Private keys and credential files in
	// home directories (~/.ssh/id_*, ~/.aws/credentials, ...) follow the same rule.
	CopySecrets bool
	// HashRedactedOriginals records the SHA-256 of an environment block before redaction. Off by default: with
	// the rest of the block stored, that hash lets anyone holding the archive confirm a guess of a redacted
	// value offline (a weak password), so only the original's size is recorded.
	HashRedactedOriginals bool
	// BodyfileRoots are listed as mactime bodyfile lines (container/bodyfile.txt). Default ["/", "/dev/shm"].
	BodyfileRoots []string
	// Exclude are subtrees not walked (pseudo filesystems); each is recorded once with reason excluded. Default
	// /proc, /sys, /dev (with /dev/shm walked on its own).
	Exclude []string
	// RecentSince: files under BodyfileRoots changed (mtime or ctime) at or after it are copied (up to
	// MaxFileBytes). Zero means the start time of the oldest process, i.e. changed since the container started.
	RecentSince time.Time
	// TempDirs are tried in order for the collector binary (a writable directory not mounted noexec); "$HOME"
	// stands for the container user's home. Default /tmp, /var/tmp, /dev/shm, $HOME, /run.
	TempDirs []string

	// Root is the target's root filesystem as the collector sees it. Default "/". Issue 13's ephemeral mode sets
	// it to /proc/<pid>/root of a process of the target; symlinks below it resolve inside it.
	Root string
	// Proc is the procfs the processes are read from. Default "/proc".
	Proc string
	// RootPID is the process whose view (mountinfo, cgroup, namespaces, /proc/net) stands for the container's.
	// 0 means the collector's own (self).
	RootPID int
	// PIDs restricts the processes collected; nil means every process in Proc but the collector itself.
	PIDs []int

	// Arch is the node's architecture (amd64 or arm64, as Node.status.nodeInfo.architecture says). Default the
	// acquirer's own.
	Arch string
	// BinaryDir holds warren-collector-linux-<arch> (make build writes them to bin/). Required for the collector
	// method.
	BinaryDir string
	// Log receives progress at debug level and fallbacks at info. Default: discard.
	Log *slog.Logger
}

// Defaults.
const (
	DefaultMaxBytes        = 2 << 30
	DefaultMaxFileBytes    = 8 << 20
	DefaultMaxTmpFileBytes = 32 << 20
	DefaultMaxExeBytes     = 256 << 20
	DefaultTimeBudget      = 10 * time.Minute
)

// DefaultOptions returns the defaults every zero field of Options takes.
func DefaultOptions() Options {
	return Options{
		Profile:         ProfileTriage,
		Method:          MethodAuto,
		MaxBytes:        DefaultMaxBytes,
		MaxFileBytes:    DefaultMaxFileBytes,
		MaxTmpFileBytes: DefaultMaxTmpFileBytes,
		MaxExeBytes:     DefaultMaxExeBytes,
		TimeBudget:      DefaultTimeBudget,
		BodyfileRoots:   []string{"/", "/dev/shm"},
		Exclude:         []string{"/proc", "/sys", "/dev"},
		TempDirs:        []string{"/tmp", "/var/tmp", "/dev/shm", "$HOME", "/run"},
		Root:            "/",
		Proc:            "/proc",
	}
}

// Result says what one collection did. Every entry the sink received is in Files.
type Result struct {
	// Mode is "collector" or "shell"; ModeReason says why shell (e.g. "/tmp: mounted noexec; /var/tmp: read-only;
	// no chmod") or is empty.
	Mode, ModeReason string
	// CollectorVersion and CollectorDigest ("sha256:HEX") name the binary sent; its self-hash matched the digest.
	// Empty in shell mode.
	CollectorVersion, CollectorDigest string
	// Files are the archive entries in stream order, with the bytes stored as their subject.
	Files []File
	// Skipped lists everything not collected, with its reason.
	Skipped []Skip
	// Stdout is the exec stdout that carried the collector's stream (collector mode); the connector's witness
	// record of that exec shows the same byte count and hash.
	Stdout StreamDigest
	// Execs are every exec this collection ran, in order (the witness records are per exec).
	Execs []ExecRecord
	// Footprint lists what the collection left or changed in the container (uploaded file, its removal).
	Footprint []string
	// Node is the node mode's node/bundle.json: where the container was found and its drift's counts.
	Node *NodeInfo
	// Started and Ended bound the collection.
	Started, Ended time.Time
}

// File is one archive entry.
type File struct {
	Path   string `json:"path"`   // archive path (container/..., collector/...)
	Size   int64  `json:"size"`   // bytes stored
	SHA256 string `json:"sha256"` // hex SHA-256 of the bytes stored, computed by the receiver and (collector mode)
	// by the collector
	// Source is the path in the target (escaped as archive paths are), empty for generated entries.
	Source string `json:"source,omitempty"`
	// OrigSize and OrigSHA256 describe the source when what was stored differs from it (redacted, capped,
	// changed while read); OrigSHA256 only where the original was read whole. OrigSize -1: unknown (shell mode
	// stops reading at the cap).
	OrigSize   int64  `json:"orig_size,omitempty"`
	OrigSHA256 string `json:"orig_sha256,omitempty"`
	// Note says how the stored bytes differ: "redacted: NAME,NAME", "size-cap", "max-bytes", "time-budget",
	// "changed: grew while read" / "changed: shrank while read, padded with N zero bytes".
	Note string `json:"note,omitempty"`
}

// Skip is one item not collected.
type Skip struct {
	Path   string `json:"path"` // target path (escaped) or a description ("processes", "/proc/42/exe")
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// Skip reasons.
const (
	ReasonPermission = "permission"  // EACCES/EPERM
	ReasonNotFound   = "not-found"   // gone or never there
	ReasonSizeCap    = "size-cap"    // larger than the per-file cap: stored truncated
	ReasonMaxBytes   = "max-bytes"   // the target's MaxBytes was reached
	ReasonTimeBudget = "time-budget" // TimeBudget ran out before it
	ReasonSecret     = "secret"      // Kubernetes Secret/projected volume or credential file; CopySecrets copies
	ReasonSpecial    = "special"     // not a regular file (socket, fifo, device)
	ReasonExcluded   = "excluded"    // an excluded subtree (pseudo filesystem)
	ReasonSelf       = "self"        // the collector's own process or file
	ReasonDuplicate  = "duplicate"   // same content already stored (Detail names it)
	ReasonNoTool     = "no-tool"     // shell mode: the tool it needs (readlink, stat) is not in the image
	ReasonError      = "error"       // anything else (Detail says)
)

// StreamDigest is the byte count and hex SHA-256 of a byte stream.
type StreamDigest struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// ExecRecord is one exec of a collection. Argv is as sent, except that a constant script is named by its
// ScriptName ("script:probe") so records stay short.
type ExecRecord struct {
	Argv    []string     `json:"argv"`
	Stdin   StreamDigest `json:"stdin"`
	Stdout  StreamDigest `json:"stdout"`
	Started time.Time    `json:"started"`
	Ended   time.Time    `json:"ended"`
	Err     string       `json:"error,omitempty"`
}

// Errors Collect returns; wrapped with detail, test with errors.Is.
var (
	// ErrNoShell: the container has no sh (distroless); neither method can run.
	ErrNoShell = errors.New("container has no /bin/sh")
	// ErrSelfHash: the collector's hash of its own executable is not the digest of the binary sent; nothing it
	// wrote was passed on.
	ErrSelfHash = errors.New("collector self-hash does not match the binary sent")
	// ErrIntegrity: an entry's bytes as received differ from the collector's manifest, an entry is missing from
	// either side, or the stream is malformed. The error names the file.
	ErrIntegrity = errors.New("evidence integrity check failed")
	// ErrNoBinary: no collector binary for the node's architecture in BinaryDir.
	ErrNoBinary = errors.New("no collector binary for this architecture")
)

// IntegrityError is an ErrIntegrity naming the file.
type IntegrityError struct {
	Path   string // archive path
	Reason string
}

func (e *IntegrityError) Error() string {
	return "evidence integrity check failed: " + e.Path + ": " + e.Reason
}

// Unwrap makes errors.Is(err, ErrIntegrity) hold.
func (e *IntegrityError) Unwrap() error { return ErrIntegrity }
