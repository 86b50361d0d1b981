package s3store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/warren-dev/warren/evidence"
)

// Staged is what UploadStaged did with one target found in the staging directory.
type Staged struct {
	Dir      string // the target's directory (<namespace>/<pod>/<container>)
	Uploaded bool   // its statement and archive are in the bucket now, and their staged copies removed
	// Reason says why a target was left staged (it does not verify, the bucket holds another acquisition of it
	// that verifies, the upload failed); empty when Uploaded.
	Reason string
}

// UploadStaged uploads the targets that an earlier run staged whole but could not upload (statement and archive
// staged, verifying with keys), statement first, and removes their staged copies. A target that does not verify
// in staging is left there (the run acquires it again); so is one whose directory in the bucket already holds an
// acquisition that verifies and differs (nothing in the bucket is replaced by an older acquisition). Run it before
// acquiring into the store, so that resume finds those targets in the bucket and keeps them.
//
// An archive staged as evidence.tar.partial next to a staged statement is whole when its SHA-256 is the one the
// signed statement names: the run stopped between the statement's upload and the archive's commit.
func (s *Store) UploadStaged(ctx context.Context, keys *evidence.Keys) ([]Staged, error) {
	if s.staging == nil {
		return nil, errReadOnly
	}
	names, err := s.staging.List(ctx, "/"+evidence.StatementName)
	if err != nil {
		return nil, fmt.Errorf("cannot list the staging directory %s: %w", s.StagingDir(), err)
	}
	var done []Staged
	for _, n := range names {
		if ctx.Err() != nil {
			return done, context.Cause(ctx)
		}
		dir := strings.TrimSuffix(n, "/"+evidence.StatementName)
		if evidence.CheckName(dir) != nil {
			continue
		}
		st := s.uploadStaged(ctx, dir, keys)
		if st.Uploaded {
			s.log.Info("uploaded a target staged by an earlier run", "target", dir, "location", s.Location(dir))
		} else {
			s.log.Warn("a staged target is left in the staging directory", "target", dir, "path", s.staging.Location(dir), "reason", st.Reason)
		}
		done = append(done, st)
	}
	return done, nil
}

func (s *Store) uploadStaged(ctx context.Context, dir string, keys *evidence.Keys) Staged {
	archive := dir + "/" + evidence.ArchiveName
	if err := s.promotePartial(ctx, archive, dir, keys); err != nil {
		return Staged{Dir: dir, Reason: err.Error()}
	}
	local := evidence.VerifyTarget(ctx, s.staging, dir, keys)
	if !local.OK() {
		return Staged{Dir: dir, Reason: "it does not verify in staging: " + local.Failures[0].String()}
	}
	if _, err := s.Stat(ctx, archive); err == nil {
		remote := evidence.VerifyTarget(ctx, s, dir, keys)
		switch {
		case remote.OK() && remote.Statement.Predicate.Archive.SHA256 == local.Statement.Predicate.Archive.SHA256:
			s.dropStaged(ctx, archive) // uploaded already: the run ended before it removed the staged copies
			return Staged{Dir: dir, Uploaded: true}
		case remote.OK():
			return Staged{Dir: dir, Reason: fmt.Sprintf("%s holds another acquisition of this target (%s) that verifies: it is not replaced",
				s.Location(dir), remote.Statement.Predicate.AcquisitionID)}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Staged{Dir: dir, Reason: err.Error()}
	}
	for _, f := range []struct{ name, sha256 string }{
		{dir + "/" + evidence.StatementName, ""},
		{archive, local.Statement.Predicate.Archive.SHA256},
	} {
		if err := s.uploadFile(ctx, f.name, f.sha256); err != nil {
			return Staged{Dir: dir, Reason: s.keptError(f.name, err).Error()}
		}
	}
	s.dropStaged(ctx, archive)
	s.abortIncomplete(ctx, s.key(archive)) // the failed upload's, if its abort failed too
	return Staged{Dir: dir, Uploaded: true}
}

// promotePartial renames a staged archive.partial to archive when the staged statement names exactly its SHA-256,
// and leaves it otherwise.
func (s *Store) promotePartial(ctx context.Context, archive, dir string, keys *evidence.Keys) error {
	final := s.staging.Location(archive)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	partial := final + evidence.PartialSuffix
	if _, err := os.Stat(partial); err != nil {
		return fmt.Errorf("no staged %s", evidence.ArchiveName)
	}
	if err := os.Rename(partial, final); err != nil {
		return err
	}
	if rep := evidence.VerifyTarget(ctx, s.staging, dir, keys); !rep.OK() {
		if err := os.Rename(final, partial); err != nil {
			return err
		}
		return fmt.Errorf("its archive is partial (%s)", rep.Failures[0])
	}
	return nil
}

// uploadFile uploads a staged object whose sums were not taken as it was written: they are taken now, and when
// want is not empty the whole SHA-256 must be it (the statement's digest of the archive), so that what the store
// is asked to check is what was signed, even if the file changed after VerifyTarget read it.
func (s *Store) uploadFile(ctx context.Context, name, want string) error {
	f, err := os.Open(s.staging.Location(name))
	if err != nil {
		return err
	}
	whole, parts, err := sumFile(f, s.cfg.PartSize)
	if err != nil {
		f.Close()
		return err
	}
	if got := hex.EncodeToString(whole); want != "" && got != want {
		f.Close()
		return fmt.Errorf("the staged copy %s changed: sha256 %s, the statement says %s", f.Name(), got, want)
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return err
	}
	return s.upload(ctx, name, fi.Size(), parts)
}
