package evidence

import (
	"context"
	"fmt"
	"sort"
)

// TargetWriter writes one target's archive and, once it is complete, its statement. The archive is visible only
// as evidence.tar.partial until Finish has written the statement.
type TargetWriter struct {
	store Store
	dir   string
	obj   Object
	arch  *Archive
}

// BeginTarget starts the target in dir (TargetDir). Whatever a previous run left there is removed first, the
// archive before the statement, so that an evidence.tar never stands without the statement that was made for it.
func BeginTarget(ctx context.Context, store Store, dir string) (*TargetWriter, error) {
	for _, name := range []string{ArchiveName, StatementName} {
		if err := store.Remove(ctx, dir+"/"+name); err != nil {
			return nil, fmt.Errorf("cannot remove the previous %s: %w", store.Location(dir+"/"+name), err)
		}
	}
	obj, err := store.Create(ctx, dir+"/"+ArchiveName)
	if err != nil {
		return nil, err
	}
	return &TargetWriter{store: store, dir: dir, obj: obj, arch: NewArchive(obj)}, nil
}

// Archive is where the entries go.
func (t *TargetWriter) Archive() *Archive { return t.arch }

// Dir is the target's directory in the store.
func (t *TargetWriter) Dir() string { return t.dir }

// Abandon leaves the archive partial (evidence.tar.partial), for a target that failed or was interrupted.
func (t *TargetWriter) Abandon() error { return t.obj.Close() }

// Finish closes the archive, signs the statement built from pred and the archive's files, writes it, and then makes
// the archive whole (evidence.tar). pred.Archive is filled in here.
func (t *TargetWriter) Finish(ctx context.Context, signer *Signer, pred Predicate) (*Statement, error) {
	size, sum, err := t.arch.Close()
	if err != nil {
		t.obj.Close()
		return nil, err
	}
	pred.Archive = ArchiveInfo{Name: ArchiveName, Size: size, SHA256: sum, Files: len(t.arch.files)}
	st := NewStatement(pred, t.arch.files)
	env, err := signer.SignStatement(ctx, st)
	if err != nil {
		t.obj.Close()
		return nil, err
	}
	so, err := t.store.Create(ctx, t.dir+"/"+StatementName)
	if err != nil {
		t.obj.Close()
		return nil, err
	}
	if _, err := so.Write(env); err != nil {
		so.Close()
		t.obj.Close()
		return nil, fmt.Errorf("cannot write %s: %w", t.store.Location(t.dir+"/"+StatementName), err)
	}
	if err := so.Commit(); err != nil {
		t.obj.Close()
		return nil, err
	}
	if err := t.obj.Commit(); err != nil {
		return nil, err
	}
	return st, nil
}

// NewStatement builds the statement of an archive: one subject for the archive (pred.Archive) and one per file.
func NewStatement(pred Predicate, files []File) *Statement {
	st := &Statement{Type: StatementType, PredicateType: PredicateType, Predicate: pred}
	st.Subject = append(st.Subject, Subject{Name: ArchiveName, Digest: map[string]string{"sha256": pred.Archive.SHA256}})
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, f := range sorted {
		st.Subject = append(st.Subject, Subject{Name: f.Path, Digest: map[string]string{"sha256": f.SHA256}})
	}
	return st
}
