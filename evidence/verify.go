package evidence

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"

	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// Failure is one thing that does not verify: the object (store-relative name; for a file inside an archive,
// "<dir>/evidence.tar:<path>") and why.
type Failure struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

func (f Failure) String() string { return f.Path + ": " + f.Reason }

// TargetReport is the verification of one target directory.
type TargetReport struct {
	Dir       string
	Statement *Statement // nil when the statement could not be read and verified
	Failures  []Failure
}

// OK reports whether everything of the target verified.
func (r TargetReport) OK() bool { return len(r.Failures) == 0 && r.Statement != nil }

// Report is the verification of a whole store.
type Report struct {
	Targets []TargetReport
	// Failures are all failures, the targets' included, sorted by path.
	Failures []Failure
}

// VerifyTarget checks one target: the statement's signature with keys, that it is an in-toto Statement v1 with
// warren's predicate for this very target, the archive's sha256 and size, and every regular file inside the archive
// against its subject (changed, missing from the archive, or not in the statement). It reads the archive once.
func VerifyTarget(ctx context.Context, store Store, dir string, keys *Keys) TargetReport {
	rep := TargetReport{Dir: dir}
	fail := func(path, format string, args ...any) {
		rep.Failures = append(rep.Failures, Failure{Path: path, Reason: fmt.Sprintf(format, args...)})
	}
	stName, archName := dir+"/"+StatementName, dir+"/"+ArchiveName
	st, err := readStatement(ctx, store, stName, keys)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, perr := store.Stat(ctx, archName+PartialSuffix); perr == nil {
				fail(archName+PartialSuffix, "the acquisition of this target did not finish (partial archive, no statement)")
				return rep
			}
			fail(stName, "missing")
			return rep
		}
		fail(stName, "%v", err)
		return rep
	}
	p := st.Predicate
	if want, err := TargetDir(p.Target.Namespace, p.Target.Pod, p.Target.Container); err != nil || want != dir {
		fail(stName, "the statement is about %s/%s/%s, not about the target of this directory", clip(p.Target.Namespace), clip(p.Target.Pod), clip(p.Target.Container))
		return rep
	}
	subjects := map[string]string{}
	for _, s := range st.Subject {
		if _, dup := subjects[s.Name]; dup {
			fail(stName, "subject %q is listed twice", clip(s.Name))
			return rep
		}
		subjects[s.Name] = s.Digest["sha256"]
	}
	archSum, ok := subjects[ArchiveName]
	if !ok {
		fail(stName, "no subject for %s", ArchiveName)
		return rep
	}
	delete(subjects, ArchiveName)
	rep.Statement = st

	f, err := store.Open(ctx, archName)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			fail(archName, "missing (the statement lists it)")
		} else {
			fail(archName, "cannot read: %v", err)
		}
		return rep
	}
	defer f.Close()
	whole := sha256.New()
	counted := &countingReader{r: io.TeeReader(f, whole)}
	tr := tar.NewReader(counted)
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(archName, "not a valid tar archive past byte %d: %v", counted.n, err)
			break
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if seen[name] {
			fail(archName+":"+name, "in the archive twice")
			continue
		}
		seen[name] = true
		sum := sha256.New()
		if _, err := io.Copy(sum, tr); err != nil {
			fail(archName+":"+name, "cannot read: %v", err)
			break
		}
		got := hex.EncodeToString(sum.Sum(nil))
		want, listed := subjects[name]
		switch {
		case !listed:
			fail(archName+":"+name, "in the archive but not in the statement")
		case got != want:
			fail(archName+":"+name, "sha256 %s, the statement says %s", got, want)
		}
	}
	if _, err := io.Copy(io.Discard, counted); err != nil { // whatever follows the end of the tar is part of the file
		fail(archName, "cannot read: %v", err)
	}
	for _, name := range sortedKeys(subjects) {
		if !seen[name] {
			fail(archName+":"+name, "listed in the statement but not in the archive")
		}
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != archSum {
		fail(archName, "sha256 %s, the statement says %s", got, archSum)
	}
	if p.Archive.Size != 0 && counted.n != p.Archive.Size {
		fail(archName, "%d bytes, the statement says %d", counted.n, p.Archive.Size)
	}
	return rep
}

// Verify checks every target of a store (every statement, every archive or partial archive without one) and the
// index: a target the index lists as acquired must verify.
func Verify(ctx context.Context, store Store, keys *Keys) (*Report, error) {
	dirs := map[string]bool{}
	for _, suffix := range []string{"/" + StatementName, "/" + ArchiveName, "/" + ArchiveName + PartialSuffix} {
		names, err := store.List(ctx, suffix)
		if err != nil {
			return nil, fmt.Errorf("cannot list %s: %w", store.Location(""), err)
		}
		for _, n := range names {
			dirs[strings.TrimSuffix(n, suffix)] = true
		}
	}
	rep := &Report{}
	idx, err := ReadIndex(ctx, store)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		rep.Failures = append(rep.Failures, Failure{Path: IndexName, Reason: err.Error()})
	default:
		for _, t := range idx.Targets {
			if t.Result == ResultAcquired || t.Result == ResultKept {
				dirs[t.Dir] = true
			}
		}
	}
	if len(dirs) == 0 {
		rep.Failures = append(rep.Failures, Failure{Path: store.Location(""), Reason: "no " + StatementName + " found: nothing to verify"})
	}
	for _, d := range sortedKeys(dirs) {
		if checkName(d) != nil {
			continue
		}
		tr := VerifyTarget(ctx, store, d, keys)
		rep.Targets = append(rep.Targets, tr)
		rep.Failures = append(rep.Failures, tr.Failures...)
	}
	sort.SliceStable(rep.Failures, func(i, j int) bool { return rep.Failures[i].Path < rep.Failures[j].Path })
	return rep, nil
}

// Verified reports whether a target's statement and archive verify: resume keeps such a target.
func Verified(ctx context.Context, store Store, dir string, keys *Keys) bool {
	return VerifyTarget(ctx, store, dir, keys).OK()
}

func readStatement(ctx context.Context, store Store, name string, keys *Keys) (*Statement, error) {
	r, err := store.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxEnvelopeBytes+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", err)
	}
	if len(data) > maxEnvelopeBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxEnvelopeBytes)
	}
	return OpenEnvelope(ctx, data, keys)
}

// parseStatement checks a payload with the in-toto attestation library's own validation (Statement v1: type,
// subjects with digests, predicate type and predicate), then reads warren's predicate.
func parseStatement(payload []byte) (*Statement, error) {
	var ref intoto.Statement
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(payload, &ref); err != nil {
		return nil, fmt.Errorf("the payload is not an in-toto Statement: %v", err)
	}
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("the payload is not a valid in-toto Statement: %v", err)
	}
	var st Statement
	if err := json.Unmarshal(payload, &st); err != nil {
		return nil, fmt.Errorf("the payload is not warren's statement: %v", err)
	}
	if st.Type != StatementType {
		return nil, fmt.Errorf("statement _type %q, want %q", clip(st.Type), StatementType)
	}
	if st.PredicateType != PredicateType {
		return nil, fmt.Errorf("predicateType %q, want %q", clip(st.PredicateType), PredicateType)
	}
	for _, s := range st.Subject {
		if d := s.Digest["sha256"]; len(d) != 64 || strings.ToLower(d) != d {
			return nil, fmt.Errorf("subject %q has no sha256 digest of 64 lowercase hex digits", clip(s.Name))
		}
	}
	return &st, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
