package evidence

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// File is one regular file of an archive: its path inside the archive, size and sha256 (lowercase hex) of the bytes
// stored.
type File struct {
	Path   string
	Size   int64
	SHA256 string
}

// Archive writes evidence.tar (POSIX: USTAR, or PAX where a header needs it) and hashes it twice as it goes: every
// regular file's bytes, and the whole archive as written. Not safe for concurrent use.
type Archive struct {
	out   *countingHash
	tw    *tar.Writer
	files []File
	names map[string]bool
	err   error // the first write error: the archive is unusable after it
}

// NewArchive starts an archive written to w.
func NewArchive(w io.Writer) *Archive {
	out := &countingHash{w: w, h: sha256.New()}
	return &Archive{out: out, tw: tar.NewWriter(out), names: map[string]bool{}}
}

// ErrEntry is matched by WriteEntry's errors about the entry itself (name, size), as opposed to write failures.
var ErrEntry = errors.New("invalid archive entry")

// WriteEntry adds an entry. For a regular file it copies exactly hdr.Size bytes from body, hashing them, and
// fails if body has fewer or more. Names must be relative, clean and unique.
func (a *Archive) WriteEntry(hdr *tar.Header, body io.Reader) (File, error) {
	if a.err != nil {
		return File{}, a.err
	}
	name := strings.TrimSuffix(hdr.Name, "/")
	if err := checkName(name); err != nil {
		return File{}, fmt.Errorf("%w: %v", ErrEntry, err)
	}
	if a.names[name] {
		return File{}, fmt.Errorf("%w: %q is in the archive already", ErrEntry, clip(name))
	}
	if name == ArchiveName {
		return File{}, fmt.Errorf("%w: an entry may not be named %s", ErrEntry, ArchiveName)
	}
	h := *hdr
	if h.Format == tar.FormatGNU {
		h.Format = tar.FormatPAX // POSIX formats only
	}
	regular := h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeRegA
	if regular {
		h.Typeflag = tar.TypeReg
	} else {
		h.Size = 0
	}
	if err := a.tw.WriteHeader(&h); err != nil {
		if a.out.err != nil {
			a.err = fmt.Errorf("failed to write the archive: %w", a.out.err)
			return File{}, a.err
		}
		return File{}, fmt.Errorf("%w: %q: %v", ErrEntry, clip(name), err)
	}
	a.names[name] = true
	if !regular {
		return File{}, nil
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(a.tw, sum), io.LimitReader(body, h.Size))
	switch {
	case a.out.err != nil:
		a.err = fmt.Errorf("failed to write the archive: %w", a.out.err)
		return File{}, a.err
	case err != nil:
		a.err = fmt.Errorf("reading %s: %w", clip(name), err)
		return File{}, a.err
	case n < h.Size:
		a.err = fmt.Errorf("%w: %s: %d bytes, the header says %d", ErrEntry, clip(name), n, h.Size)
		return File{}, a.err
	}
	var probe [1]byte
	if m, _ := body.Read(probe[:]); m > 0 {
		a.err = fmt.Errorf("%w: %s: more bytes than the %d of its header", ErrEntry, clip(name), h.Size)
		return File{}, a.err
	}
	f := File{Path: name, Size: n, SHA256: hex.EncodeToString(sum.Sum(nil))}
	a.files = append(a.files, f)
	return f, nil
}

// Files returns the regular files written so far, in order.
func (a *Archive) Files() []File { return a.files }

// Written is the number of bytes of the archive written so far.
func (a *Archive) Written() int64 { return a.out.n }

// Close writes the end of the archive and returns its size and sha256.
func (a *Archive) Close() (size int64, sum string, err error) {
	if a.err != nil {
		return 0, "", a.err
	}
	if err := a.tw.Close(); err != nil {
		return 0, "", fmt.Errorf("failed to finish the archive: %w", err)
	}
	return a.out.n, hex.EncodeToString(a.out.h.Sum(nil)), nil
}

// countingHash passes writes on to w, hashing and counting what w took.
type countingHash struct {
	w   io.Writer
	h   hash.Hash
	n   int64
	err error
}

func (c *countingHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}
