package evidence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Store holds the objects of an acquisition under slash-separated names relative to its root
// ("payments/api-7f9c/main/evidence.tar"). Implementations must be safe for concurrent use on different names.
type Store interface {
	// Create starts writing name. Its bytes are visible as name+PartialSuffix while they are written (or the store's
	// equivalent), and under name only after Commit. An object closed without Commit stays partial.
	Create(ctx context.Context, name string) (Object, error)
	// Open reads a committed object; a missing one is an error matching fs.ErrNotExist.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	// Stat returns a committed object's size; a missing one is an error matching fs.ErrNotExist.
	Stat(ctx context.Context, name string) (int64, error)
	// Remove deletes a committed object (and a partial one of the same name). A missing object is not an error.
	Remove(ctx context.Context, name string) error
	// List returns the names of the committed objects whose name ends with suffix, sorted.
	List(ctx context.Context, suffix string) ([]string, error)
	// Location is where name is, for people: a file path, a URL.
	Location(name string) string
}

// Object is an object being written to a Store.
type Object interface {
	io.Writer
	// Commit makes the object visible under its name, durably. The Object is closed afterwards.
	Commit() error
	// Close abandons an object not committed: its bytes stay under the partial name. Safe after Commit.
	Close() error
}

// LocalStore is a Store in a local directory. Objects are written to name.partial, synced, and renamed.
type LocalStore struct {
	root string
}

// NewLocalStore returns a store rooted at dir, creating it (mode 0700) if needed.
func NewLocalStore(dir string) (*LocalStore, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the output directory: %w", err)
	}
	return &LocalStore{root: abs}, nil
}

// Root is the store's directory.
func (s *LocalStore) Root() string { return s.root }

func (s *LocalStore) path(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(name)), nil
}

// Location implements Store.
func (s *LocalStore) Location(name string) string {
	return filepath.Join(s.root, filepath.FromSlash(name))
}

// Create implements Store.
func (s *LocalStore) Create(_ context.Context, name string) (Object, error) {
	p, err := s.path(name)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", filepath.Dir(p), err)
	}
	f, err := os.OpenFile(p+PartialSuffix, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", p+PartialSuffix, err)
	}
	return &localObject{f: f, final: p}, nil
}

type localObject struct {
	f     *os.File
	final string
	done  bool
}

func (o *localObject) Write(p []byte) (int, error) { return o.f.Write(p) }

func (o *localObject) Commit() error {
	if o.done {
		return errors.New("object already closed")
	}
	o.done = true
	err := o.f.Sync()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.f.Name(), o.final)
	}
	if err == nil {
		err = syncDir(filepath.Dir(o.final))
	}
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", o.final, err)
	}
	return nil
}

func (o *localObject) Close() error {
	if o.done {
		return nil
	}
	o.done = true
	return o.f.Close()
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open implements Store.
func (s *LocalStore) Open(_ context.Context, name string) (io.ReadCloser, error) {
	p, err := s.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	return f, nil
}

// Stat implements Store.
func (s *LocalStore) Stat(_ context.Context, name string) (int64, error) {
	p, err := s.path(name)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", p)
	}
	return fi.Size(), nil
}

// Remove implements Store.
func (s *LocalStore) Remove(_ context.Context, name string) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	for _, f := range []string{p, p + PartialSuffix} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// List implements Store. Symbolic links are not followed.
func (s *LocalStore) List(_ context.Context, suffix string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || !strings.HasSuffix(p, suffix) {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	sort.Strings(names)
	return names, err
}
