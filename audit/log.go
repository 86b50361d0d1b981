package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// MaxLineBytes bounds one audit line (without its newline). Write refuses a larger record and Verify and Open
// refuse a larger line, so that reading a log never needs more memory than this. Request paths are far smaller:
// the servers refuse request headers (and so request lines) over 1 MiB.
const MaxLineBytes = 4 << 20

// zeroHash is the PrevHash of the first record of a file.
var zeroHash = strings.Repeat("0", sha256.Size*2)

var (
	// ErrClosed is returned by Write after Close.
	ErrClosed = errors.New("audit log is closed")
	// ErrTornLog is matched by the error Open returns for a file whose last line is incomplete or unreadable, so
	// that the chain cannot be continued.
	ErrTornLog = errors.New("audit log ends with a damaged line")
	// ErrRecordTooLarge is matched by the error Write returns for a record whose line would exceed MaxLineBytes.
	ErrRecordTooLarge = errors.New("audit record too large")
)

// Log appends hash-chained records to a file or writer. All methods may be called concurrently: a mutex
// serializes writers, so each record is marshalled and written in one Write call while no other is in flight,
// and at most one record is buffered at a time.
type Log struct {
	mu     sync.Mutex
	w      io.Writer
	closer io.Closer // the file that Open opened; nil for New
	buf    bytes.Buffer
	enc    *json.Encoder // writes into buf
	seq    uint64        // Seq of the last record written
	prev   string        // PrevHash for the next record
	err    error         // sticky: set after a partial write left a torn line, or by Close
}

// New returns a Log that writes a new chain to w (first record: Seq 1, PrevHash 64 zeros). Close does not close w.
func New(w io.Writer) *Log {
	return newLog(w, nil, 0, zeroHash)
}

func newLog(w io.Writer, c io.Closer, seq uint64, prev string) *Log {
	l := &Log{w: w, closer: c, seq: seq, prev: prev}
	l.enc = json.NewEncoder(&l.buf)
	l.enc.SetEscapeHTML(false) // keep <, > and & readable in paths and reasons
	return l
}

// Open opens (or creates, mode 0600) the audit log at path for appending. A file that already holds records is
// continued: the next record carries the last line's Seq + 1 and its hash. Only the last line is read; run Verify
// to check the whole file. A file whose last line is incomplete (no trailing newline, as left by a crash mid-write
// or a truncation) or is not a record cannot be continued: Open fails with an error matching ErrTornLog that tells
// the admin what to do.
func Open(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open audit log: %w", err)
	}
	seq, prev, err := lastLink(f)
	if err != nil {
		f.Close()
		var torn tornError
		if errors.As(err, &torn) {
			return nil, fmt.Errorf("%w: %s: %s; run `warren audit verify %s` to see the damage, then move the file aside so that a new chain starts", ErrTornLog, path, torn, path)
		}
		return nil, fmt.Errorf("failed to read the end of audit log %s: %w", path, err)
	}
	return newLog(f, f, seq, prev), nil
}

// tornError is why the last line of a log cannot be continued; Open wraps it in ErrTornLog with advice.
type tornError string

func (e tornError) Error() string { return string(e) }

// lastLink reads the last line of f and returns its Seq and the PrevHash of the record that follows it; for an
// empty file, 0 and 64 zeros.
func lastLink(f *os.File) (uint64, string, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, "", err
	}
	size := fi.Size()
	if size == 0 {
		return 0, zeroHash, nil
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return 0, "", err
	}
	if last[0] != '\n' {
		return 0, "", tornError("the last line has no newline (a write was cut short or the file was truncated)")
	}
	// Read backwards from the final newline to the one before it (or the start of the file), at most MaxLineBytes.
	end := size - 1
	start := end
	const chunk = 64 << 10
	var line []byte
	for start > 0 && end-start <= MaxLineBytes {
		n := min(int64(chunk), start)
		b := make([]byte, n)
		if _, err := f.ReadAt(b, start-n); err != nil {
			return 0, "", err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			line = append(b[i+1:], line...)
			start -= n - int64(i) - 1
			break
		}
		line = append(b, line...)
		start -= n
	}
	if len(line) > MaxLineBytes {
		return 0, "", tornError(fmt.Sprintf("the last line is longer than %d bytes", MaxLineBytes))
	}
	seq, _, err := parseLink(line)
	if err != nil {
		return 0, "", tornError("the last line is not an audit record: " + err.Error())
	}
	return seq, hashLine(line), nil
}

// Write sets r's Seq and PrevHash and appends it as one JSON line, in a single Write call. It returns an error
// matching ErrRecordTooLarge for a record over MaxLineBytes (nothing is written, the chain goes on), ErrClosed after
// Close, or the underlying write error. After a write error that wrote part of a line, every later Write fails too:
// appending after a torn line would bury it.
func (l *Log) Write(r Record) error {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Time = r.Time.UTC()

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	r.Seq = l.seq + 1
	r.PrevHash = l.prev
	l.buf.Reset()
	if err := l.enc.Encode(&r); err != nil { // appends the newline
		return fmt.Errorf("failed to marshal audit record: %w", err)
	}
	line := l.buf.Bytes()
	if len(line)-1 > MaxLineBytes {
		l.shrinkBuf()
		return fmt.Errorf("%w: %d bytes, the limit is %d (request %s %.200q)", ErrRecordTooLarge, len(line)-1, MaxLineBytes, r.Method, r.Path)
	}
	n, err := l.w.Write(line)
	if err != nil {
		if n > 0 {
			l.err = fmt.Errorf("audit log unusable: an earlier write failed after %d of %d bytes: %w", n, len(line), err)
		}
		return fmt.Errorf("failed to write audit record: %w", err)
	}
	l.seq = r.Seq
	l.prev = hashLine(line[:len(line)-1])
	l.shrinkBuf()
	return nil
}

// shrinkBuf drops a buffer grown by an unusually large record, so that the Log does not keep it.
func (l *Log) shrinkBuf() {
	if l.buf.Cap() > 64<<10 {
		l.buf = bytes.Buffer{}
	}
}

// Close makes later Writes fail with ErrClosed and, for a Log from Open, syncs and closes the file. It may be
// called more than once; only the first call returns an error.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if errors.Is(l.err, ErrClosed) {
		return nil
	}
	l.err = ErrClosed
	if l.closer == nil {
		return nil
	}
	var err error
	if f, ok := l.closer.(*os.File); ok {
		err = f.Sync()
	}
	if cerr := l.closer.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("failed to close audit log: %w", err)
	}
	return nil
}

func hashLine(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// link is the part of a record that the chain checks. Pointers tell a missing field from a zero one.
type link struct {
	Seq      *uint64 `json:"seq"`
	PrevHash *string `json:"prevHash"`
}

// parseLink decodes the Seq and PrevHash of one line.
func parseLink(line []byte) (uint64, string, error) {
	var k link
	if err := json.Unmarshal(line, &k); err != nil {
		return 0, "", err
	}
	switch {
	case k.Seq == nil:
		return 0, "", errors.New(`no "seq" field`)
	case k.PrevHash == nil:
		return 0, "", errors.New(`no "prevHash" field`)
	}
	return *k.Seq, *k.PrevHash, nil
}
