package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltDB is a private, checked copy of one of the volume's bbolt databases (containerd's meta.db, a snapshotter's
// metadata.db), open read-only. The volume's file is never opened for writing, never mapped, and never read by
// bbolt itself: what bbolt reads is the copy that checkBolt walked, so a file that changes underneath cannot make
// the check and the read disagree.
type boltDB struct {
	path   string // the volume's file
	size   int64
	sha256 string // of the bytes read: the state of the database the evidence comes from
	db     *bolt.DB
	tmp    string
}

// openBolt copies path into tempDir and opens the copy. It refuses a file that another process holds locked (a
// running containerd holds its databases under an exclusive flock: a copy taken while it writes could be torn), one
// larger than maxBytes, and one whose structure does not check.
func openBolt(path, tempDir string, maxBytes int64, lockWait time.Duration) (*boltDB, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrCorrupt, path)
	}
	if fi.Size() > maxBytes {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d this reads (Config.MaxDBBytes)", path, fi.Size(), maxBytes)
	}
	if err := sharedLock(f, lockWait); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(tempDir, "warren-volume-*.db")
	if err != nil {
		return nil, fmt.Errorf("cannot copy %s: %w", path, err)
	}
	d := &boltDB{path: path, tmp: tmp.Name()}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(f, maxBytes+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		d.close()
		return nil, fmt.Errorf("cannot copy %s: %w", path, err)
	}
	if n > maxBytes {
		d.close()
		return nil, fmt.Errorf("%s grew past %d bytes while it was read", path, maxBytes)
	}
	d.size, d.sha256 = n, hex.EncodeToString(h.Sum(nil))
	data, err := os.ReadFile(d.tmp)
	if err == nil {
		err = checkBolt(data)
		if err != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
		}
	}
	if err != nil {
		d.close()
		return nil, err
	}
	// The copy is ours alone: no lock to wait for. ReadOnly: bbolt neither writes nor grows it.
	err = guard(func() error {
		var oerr error
		d.db, oerr = bolt.Open(d.tmp, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		return oerr
	})
	if err != nil {
		d.close()
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return d, nil
}

// sharedLock takes a shared flock on f (released when f is closed), as bbolt's read-only open would, retrying until
// wait has passed. The lock is advisory: it tells whether a containerd is using the file, and keeps it from
// starting to while the copy is made.
func sharedLock(f *os.File, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			if errors.Is(err, syscall.ENOLCK) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
				return nil // a file system without locks (some network mounts): nobody can hold one either
			}
			return fmt.Errorf("cannot lock %s for reading: %w", f.Name(), err)
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w: %s is locked by another process, most likely a containerd running on this root: "+
				"stop it first, or acquire a snapshot of the volume (for a live node, use the node mode)", ErrLocked, f.Name())
		}
		time.Sleep(50 * time.Millisecond) // the lock has no notification to wait on
	}
}

// view runs fn in a read transaction; a panic inside bbolt (a corrupt page the structure check let through) comes
// back as an error matching ErrCorrupt.
func (d *boltDB) view(fn func(tx *bolt.Tx) error) error {
	err := guard(func() error { return d.db.View(fn) })
	var pe *panicError
	if errors.As(err, &pe) {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, d.path, pe)
	}
	return err
}

func (d *boltDB) close() {
	if d.db != nil {
		d.db.Close()
	}
	if d.tmp != "" {
		os.Remove(d.tmp)
	}
}

type panicError struct {
	v     any
	stack []byte // where bbolt failed, for tests and debugging
}

func (p *panicError) Error() string { return fmt.Sprintf("bbolt failed on it (%v)", p.v) }

// guard runs fn and turns a panic into an error. Memory faults in fn (a page mapped past the end of a file) panic
// instead of crashing the process while it runs (debug.SetPanicOnFault applies to this goroutine only).
func guard(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{v: v, stack: debug.Stack()}
		}
	}()
	return fn()
}
