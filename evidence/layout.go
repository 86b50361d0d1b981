// Package evidence is the output of an acquisition, as DESIGN.md ("Acquisition") lays it out and outside checks
// read it:
//
//	DIR/acquisition.json                                   every target and its outcome (Index)
//	DIR/<namespace>/<pod>/<container>/evidence.tar         POSIX tar of what was collected (kubernetes/ included)
//	DIR/<namespace>/<pod>/<container>/evidence.tar.partial a target that did not finish: never taken for whole
//	DIR/<namespace>/<pod>/<container>/statement.dsse.json  DSSE envelope (Ed25519) of an in-toto Statement v1
//
// The statement's subjects are the archive (sha256 of evidence.tar as written) and every regular file inside it;
// its predicate (PredicateType) says who acquired what, from where, how, and what was skipped. An evidence.tar only
// appears once its statement has been written: the archive is written as evidence.tar.partial, the statement next,
// and the archive renamed last.
//
// Everything goes through a Store (a local directory: LocalStore), so that another store (object storage) plugs
// in with the same layout, Verify and resume checks.
package evidence

import (
	"fmt"
	"path"
	"strings"
)

// Names of the layout.
const (
	ArchiveName   = "evidence.tar"
	PartialSuffix = ".partial"
	StatementName = "statement.dsse.json"
	IndexName     = "acquisition.json"
)

// Types of the statement and its envelope.
const (
	PayloadType   = "application/vnd.in-toto+json"
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://warren.dev/acquisition/v1"
)

// TargetDir is the directory of one target container: <namespace>/<pod>/<container>. Each part must be a
// Kubernetes name (namespace and container: DNS labels; pod: a DNS subdomain), which keeps the path inside the
// store whatever the cluster answered.
func TargetDir(namespace, pod, container string) (string, error) {
	for _, p := range []struct{ what, v string }{{"namespace", namespace}, {"pod", pod}, {"container", container}} {
		if !isName(p.v) {
			return "", fmt.Errorf("%s %q is not a Kubernetes name", p.what, clip(p.v))
		}
	}
	return namespace + "/" + pod + "/" + container, nil
}

// isName accepts RFC 1123 subdomains (lowercase letters, digits, '-' and '.', at most 253 bytes), without "." or
// ".." as the whole name.
func isName(s string) bool {
	if s == "" || len(s) > 253 || s == "." || s == ".." || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// CheckName refuses object names that could leave a store: absolute, with "." or ".." segments, empty segments or
// backslashes. Stores other than LocalStore (s3store) check the names they are given and the names they list with it.
func CheckName(name string) error { return checkName(name) }

// checkName refuses object names that could leave the store: absolute, with "." or ".." segments, empty segments
// or backslashes.
func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, `\`) || path.Clean(name) != name {
		return fmt.Errorf("invalid object name %q", clip(name))
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "." || seg == ".." || seg == "" {
			return fmt.Errorf("invalid object name %q", clip(name))
		}
	}
	return nil
}

// clip shortens hostile input before it goes into an error message.
func clip(s string) string {
	if len(s) <= 80 {
		return s
	}
	return s[:80] + "..."
}
