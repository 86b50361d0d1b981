package collector

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"strings"
	"syscall"
	"time"
)

// emitter writes the collector's tar stream: every entry hashed as it is written, every skip recorded, the byte
// and time budgets enforced. Owned by the one goroutine of Run.
type emitter struct {
	tw       *tar.Writer
	maxBytes int64 // negative: none
	stored   int64 // file content bytes written (container/...)
	deadline time.Time
	now      func() time.Time
	files    []File
	skips    []Skip
	names    map[string]bool
	timeUp   bool // set once the deadline passed; later items are skipped
}

// inlineMax is the largest file read whole into memory before its header is written; larger ones stream with
// the size stat gave and are padded or cut if they change meanwhile.
const inlineMax = 1 << 20

// copyChunk is how much of a streamed file is copied between time checks.
const copyChunk = 1 << 20

// origHashMax bounds how far past a cap a file is still read to hash the whole original.
const origHashMax = 1 << 30

func (e *emitter) outOfTime() bool {
	if !e.timeUp && !e.deadline.IsZero() && !e.now().Before(e.deadline) {
		e.timeUp = true
	}
	return e.timeUp
}

func (e *emitter) skip(p, reason, detail string) {
	e.skips = append(e.skips, Skip{Path: p, Reason: reason, Detail: detail})
}

// skipErr records a failed read with the reason its error calls for.
func (e *emitter) skipErr(p string, err error) {
	e.skip(p, reasonOf(err), errDetail(err))
}

func reasonOf(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ESRCH):
		return ReasonNotFound
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return ReasonPermission
	}
	return ReasonError
}

func errDetail(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

// room is how many content bytes may still be stored; -1 means no bound.
func (e *emitter) room() int64 {
	if e.maxBytes < 0 {
		return -1
	}
	return max(e.maxBytes-e.stored, 0)
}

// admit checks the time and byte budgets before a content entry of want bytes; it returns how many bytes may be
// stored (want, or less with a note) and false when the item is skipped (and recorded) instead.
func (e *emitter) admit(source string, want int64) (int64, string, bool) {
	if e.outOfTime() {
		e.skip(source, ReasonTimeBudget, "")
		return 0, "", false
	}
	room := e.room()
	if room < 0 || want <= room {
		return want, "", true
	}
	if room == 0 {
		e.skip(source, ReasonMaxBytes, fmt.Sprintf("%d bytes not stored", want))
		return 0, "", false
	}
	return room, ReasonMaxBytes, true
}

func (e *emitter) header(name string, size int64, mtime time.Time) error {
	if e.names[name] {
		return fmt.Errorf("duplicate archive path %s", name)
	}
	e.names[name] = true
	if mtime.IsZero() || mtime.Before(time.Unix(0, 0)) {
		mtime = time.Unix(0, 0)
	}
	return e.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644,
		ModTime: mtime.Truncate(time.Second), Format: tar.FormatPAX})
}

// meta writes a collector/... or generated entry: not counted against MaxBytes, never skipped for time.
func (e *emitter) meta(name string, data []byte) error {
	if err := e.header(name, int64(len(data)), e.now()); err != nil {
		return err
	}
	if _, err := e.tw.Write(data); err != nil {
		return err
	}
	e.files = append(e.files, File{Path: name, Size: int64(len(data)), SHA256: sum(data)})
	return nil
}

func (e *emitter) metaJSON(name string, v any) error {
	data, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return e.meta(name, append(data, '\n'))
}

// content writes data read whole from source; orig describes the original when data differs from it (redacted).
func (e *emitter) content(name, source string, data []byte, mtime time.Time, f File) error {
	n, note, ok := e.admit(source, int64(len(data)))
	if !ok {
		return nil
	}
	if n < int64(len(data)) {
		if f.OrigSize == 0 {
			f.OrigSize, f.OrigSHA256 = int64(len(data)), sum(data)
		}
		f.Note = joinNote(f.Note, note)
		data = data[:n]
	}
	if err := e.header(name, int64(len(data)), mtime); err != nil {
		return err
	}
	if _, err := e.tw.Write(data); err != nil {
		return err
	}
	e.stored += int64(len(data))
	f.Path, f.Source, f.Size, f.SHA256 = name, EscapeName(source), int64(len(data)), sum(data)
	e.files = append(e.files, f)
	return nil
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	return a + "; " + b
}

// readSmall reads r whole if it has at most limit bytes; otherwise it returns the first limit bytes and
// capped=true, having read (and hashed) on to EOF within origHashMax to give the original's size and hash.
func readSmall(r io.Reader, limit int64) (data []byte, capped bool, origSize int64, origSum string, err error) {
	var buf bytes.Buffer
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(&buf, h), io.LimitReader(r, limit+1))
	if err != nil {
		return nil, false, 0, "", err
	}
	if n <= limit {
		return buf.Bytes(), false, n, "", nil
	}
	rest, err := io.Copy(h, io.LimitReader(r, origHashMax))
	origSize = n + rest
	if err == nil && rest < origHashMax {
		origSum = hex.EncodeToString(h.Sum(nil))
	} else {
		origSize = -1
	}
	return buf.Bytes()[:limit], true, origSize, origSum, nil
}

// file copies an open regular file of stat size st.Size() to the archive, at most limit bytes (the per-file cap;
// negative: none). Small files are read whole first; larger ones stream under the size stat gave, padded with
// zeros if the file shrinks and cut if it grows, which the note records, so the tar stays valid.
func (e *emitter) file(name, source string, f io.Reader, size int64, mtime time.Time, limit int64) error {
	capNote := ""
	want := size
	if limit >= 0 && want > limit {
		want, capNote = limit, ReasonSizeCap
	}
	n, budgetNote, ok := e.admit(source, want)
	if !ok {
		return nil
	}
	if budgetNote != "" {
		want = n
	}
	note := joinNote(capNote, budgetNote)
	if size <= inlineMax {
		data, capped, origSize, origSum, err := readSmall(f, want)
		if err != nil {
			e.skipErr(source, err)
			return nil
		}
		rec := File{}
		if capped || note != "" {
			rec.OrigSize, rec.OrigSHA256, rec.Note = origSize, origSum, note
			if !capped {
				rec.OrigSize, rec.OrigSHA256 = int64(len(data)), sum(data)
			}
			if rec.Note == "" {
				rec.Note = "changed: grew while read"
			}
		}
		if len(data) > int(want) {
			data = data[:want]
		}
		return e.contentAdmitted(name, source, data, mtime, rec)
	}

	if err := e.header(name, want, mtime); err != nil {
		return err
	}
	h, hAll := sha256.New(), sha256.New() // the bytes stored; everything read (the original, if read whole)
	w := io.MultiWriter(e.tw, h)
	src := io.TeeReader(f, hAll)
	var copied int64
	var readErr error
	for copied < want && readErr == nil {
		if e.outOfTime() {
			note = joinNote(note, fmt.Sprintf("time-budget: stored %d of %d bytes, the rest zero-padded", copied, want))
			break
		}
		var c int64
		c, readErr = io.CopyN(w, src, min(copyChunk, want-copied))
		copied += c
	}
	if readErr != nil && readErr != io.EOF {
		note = joinNote(note, fmt.Sprintf("read error after %d bytes: %s; zero-padded", copied, errDetail(readErr)))
	} else if readErr == io.EOF {
		note = joinNote(note, fmt.Sprintf("changed: shrank while read, padded with %d zero bytes", want-copied))
	}
	if pad := want - copied; pad > 0 {
		if err := writeZeros(w, pad); err != nil {
			return err
		}
	}
	rec := File{Path: name, Source: EscapeName(source), Size: want, SHA256: hexSum(h), Note: note, OrigSize: size}
	switch {
	case readErr != nil || copied < want:
		// the original was not read whole
	case capNote != "" || budgetNote != "":
		// Read on past the cap (within origHashMax) so the original's hash is known too.
		rest, err := io.Copy(io.Discard, io.LimitReader(src, origHashMax))
		if err == nil && rest < origHashMax {
			rec.OrigSize, rec.OrigSHA256 = copied+rest, hexSum(hAll)
		}
	default:
		if extra, _ := io.CopyN(io.Discard, f, 1); extra > 0 {
			rec.Note = joinNote(rec.Note, "changed: grew while read")
			rec.OrigSize = -1
		} else {
			rec.OrigSize = 0 // stored whole, as it was
		}
	}
	e.stored += want
	e.files = append(e.files, rec)
	return nil
}

// contentAdmitted is content after admit already ran.
func (e *emitter) contentAdmitted(name, source string, data []byte, mtime time.Time, f File) error {
	if err := e.header(name, int64(len(data)), mtime); err != nil {
		return err
	}
	if _, err := e.tw.Write(data); err != nil {
		return err
	}
	e.stored += int64(len(data))
	f.Path, f.Source, f.Size, f.SHA256 = name, EscapeName(source), int64(len(data)), sum(data)
	e.files = append(e.files, f)
	return nil
}

var zeros [32 << 10]byte

func writeZeros(w io.Writer, n int64) error {
	for n > 0 {
		c := min(n, int64(len(zeros)))
		if _, err := w.Write(zeros[:c]); err != nil {
			return err
		}
		n -= c
	}
	return nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// hashReader returns the hex SHA-256 and length of r, reading at most limit bytes (ok false beyond).
func hashReader(r io.Reader, limit int64) (string, int64, bool, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, limit+1))
	if err != nil {
		return "", n, false, err
	}
	if n > limit {
		return "", n, false, nil
	}
	return hexSum(h), n, true, nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// archiveFS is the archive path of a target file.
func archiveFS(p string) string { return "container/fs" + EscapeName(cleanAbs(p)) }

func cleanAbs(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

func jsonIndent(v any) ([]byte, error) {
	data, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}
