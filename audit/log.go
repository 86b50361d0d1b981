package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxLineBytes bounds one audit line (without its newline). Verify and Open refuse a larger line, so that reading
// a log never needs more memory than this; Write clips a record's fields (MaxFieldBytes) so that it stays far below.
const MaxLineBytes = 4 << 20

// zeroHash is the PrevHash of the first record of a file.
var zeroHash = strings.Repeat("0", sha256.Size*2)

var (
	// ErrClosed is returned by Write after Close.
	ErrClosed = errors.New("audit log is closed")
	// ErrTornLog is matched by the error Open returns for a file whose last line is incomplete or unreadable, so
	// that the chain cannot be continued.
	ErrTornLog = errors.New("audit log ends with a damaged line")
	// ErrRecordTooLarge is matched by the error Write returns for a record whose line would exceed MaxLineBytes
	// even with every field clipped to 1 KiB (a field Write cannot clip).
	ErrRecordTooLarge = errors.New("audit record too large")
	// ErrStalled is matched by the error Write and Err return while a write to the log's writer has not completed
	// within Config.WriteTimeout (a full pipe, a stuck disk): records are then refused at once, not queued.
	ErrStalled = errors.New("audit log stalled")
	// ErrWriteFailed is matched by the error Err returns after a write to the log failed, until one succeeds.
	ErrWriteFailed = errors.New("audit log write failed")
)

// Config tunes a Log. Its zero value takes the defaults of DefaultConfig.
type Config struct {
	// WriteTimeout bounds how long a Write waits for the writes before it. Past it (or while a write has been in
	// progress for longer), Write drops its record and returns ErrStalled, and Err reports the log stalled.
	// Default 5 s.
	WriteTimeout time.Duration
	// MaxWaiting bounds the Writes waiting at once for the writer; more fail at once with ErrStalled. Default 1024.
	MaxWaiting int

	// SigningKey, when set, signs checkpoints: a line that attests the chain up to it (see Checkpoint). KeyID
	// names the key (the RFC 7638 thumbprint `warren keygen` prints) and is required with it.
	SigningKey ed25519.PrivateKey
	KeyID      string
	// CheckpointEvery writes a checkpoint after this many lines since the last one. Default 1000.
	CheckpointEvery int
	// CheckpointInterval writes a checkpoint this long after the first line no checkpoint covers yet. Default 10 s.
	CheckpointInterval time.Duration
	// Component names the writer in checkpoint and loss lines: ComponentGateway or ComponentConnector.
	Component string
	// Now is the clock of checkpoint and loss lines and of records without a Time. Default time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults, for flags and documentation.
func DefaultConfig() Config {
	return Config{
		WriteTimeout:       5 * time.Second,
		MaxWaiting:         1024,
		CheckpointEvery:    1000,
		CheckpointInterval: 10 * time.Second,
		Now:                time.Now,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.MaxWaiting <= 0 {
		c.MaxWaiting = d.MaxWaiting
	}
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = d.CheckpointEvery
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = d.CheckpointInterval
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Log appends hash-chained lines to a file or writer. All methods may be called concurrently. One writer at a
// time holds the log (lock): each line is marshalled and written in one Write call while no other is in flight,
// and at most one line is buffered. Waiting for the writer is bounded in time and in number (Config.WriteTimeout,
// MaxWaiting): a writer that stalls makes the log refuse records, never pile up goroutines or memory. Records
// refused that way, or whose write failed, are counted and the count is written as a loss line before the next
// line that can be written. The only goroutines are those of CheckpointInterval's timer, one at a time, brief.
type Log struct {
	cfg  Config
	lock chan struct{} // a one-slot semaphore rather than a mutex, so that waiting for it has a deadline

	waiting    atomic.Int32  // Writes waiting for lock
	writeStart atomic.Int64  // UnixNano at which the write in progress began; 0 between writes
	dropped    atomic.Uint64 // records not written since the last loss line

	hmu      sync.Mutex // guards failed, broken and lossWhy, read by Err without lock
	failed   error      // the last write error; nil once a write succeeds
	broken   error      // sticky: a torn line, or Close
	lossWhy  string     // why the records counted in dropped were lost, for the loss line
	timerSet atomic.Bool

	// Owned by the holder of lock.
	w      io.Writer
	closer io.Closer // the file that Open opened; nil for New
	buf    bytes.Buffer
	enc    *json.Encoder // writes into buf
	seq    uint64        // Seq of the last line written
	prev   string        // PrevHash for the next line
	since  int           // lines since the last checkpoint (or since the start without one)
	timer  *time.Timer   // CheckpointInterval's, while armed
	closed bool
}

// New returns a Log that writes a new chain to w (first record: Seq 1, PrevHash 64 zeros), with the defaults and
// no checkpoints. Close does not close w.
func New(w io.Writer) *Log {
	l, _ := NewWithConfig(w, Config{}) // without a signing key nothing is written yet, so nothing can fail
	return l
}

// NewWithConfig returns a Log that writes a new chain to w. With a signing key it first writes a start
// checkpoint (Seq 1).
func NewWithConfig(w io.Writer, cfg Config) (*Log, error) {
	return start(w, nil, 0, zeroHash, cfg)
}

func start(w io.Writer, c io.Closer, seq uint64, prev string, cfg Config) (*Log, error) {
	if cfg.SigningKey != nil && (len(cfg.SigningKey) != ed25519.PrivateKeySize || cfg.KeyID == "") {
		return nil, errors.New("audit: a checkpoint signing key needs to be an Ed25519 key, with its KeyID")
	}
	l := &Log{cfg: cfg.withDefaults(), w: w, closer: c, seq: seq, prev: prev, lock: make(chan struct{}, 1)}
	l.enc = json.NewEncoder(&l.buf)
	l.enc.SetEscapeHTML(false) // keep <, > and & readable in paths and reasons
	if l.signing() {
		l.lock <- struct{}{}
		err := l.checkpointLocked(CheckpointStart)
		<-l.lock
		if err != nil {
			return nil, fmt.Errorf("failed to write the audit log's start checkpoint: %w", err)
		}
	}
	return l, nil
}

// Open opens (or creates, mode 0600) the audit log at path for appending, with the defaults and no checkpoints.
// A file that already holds records is continued: the next record carries the last line's Seq + 1 and its hash.
// Only the last line is read; run Verify to check the whole file. A file whose last line is incomplete (no
// trailing newline, as left by a crash mid-write or a truncation) or is not a record cannot be continued: Open
// fails with an error matching ErrTornLog that tells the admin what to do.
func Open(path string) (*Log, error) { return OpenWithConfig(path, Config{}) }

// OpenWithConfig is Open with a Config. With a signing key it writes a start checkpoint, which also attests what
// the file held before (a previous run's lines after its last checkpoint, if it ended without a shutdown one).
func OpenWithConfig(path string, cfg Config) (*Log, error) {
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
	l, err := start(f, f, seq, prev, cfg)
	if err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
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
	k, err := parseLink(line)
	if err != nil {
		return 0, "", tornError("the last line is not an audit record: " + err.Error())
	}
	return k.seq, hashLine(line), nil
}

// Write clips r's fields (MaxFieldBytes), sets its Seq and PrevHash and appends it as one JSON line, in a single
// Write call. It returns ErrStalled when the writer is stalled (the record is dropped and counted), ErrClosed after
// Close, or the underlying write error (the record is counted as lost; the chain goes on without it). After a
// write error that wrote part of a line, every later Write fails too: appending after a torn line would bury it.
func (l *Log) Write(r Record) error {
	if r.Time.IsZero() {
		r.Time = l.cfg.Now()
	}
	r.Time = r.Time.UTC()
	clip(&r)
	if err := l.acquire(); err != nil {
		l.lose(err)
		return err
	}
	defer l.release()
	if err := l.usable(); err != nil {
		return err
	}
	if err := l.noteLossLocked(); err != nil {
		l.lose(err)
		return err
	}
	r.Seq, r.PrevHash = l.seq+1, l.prev
	err := l.writeLocked(&r)
	if errors.Is(err, ErrRecordTooLarge) {
		// A field clip cannot bound (a future field of another kind): clip harder rather than lose the record.
		clipTo(&r, 1<<10)
		err = l.writeLocked(&r)
	}
	if err != nil {
		l.lose(err)
		return err
	}
	return l.afterLineLocked()
}

// Err reports whether the log can take records now: nil, or why not (ErrStalled, ErrWriteFailed, ErrClosed or a
// torn line). It does not wait for the writer, so a readiness probe may call it at any time.
func (l *Log) Err() error {
	if ws := l.writeStart.Load(); ws != 0 {
		if d := time.Since(time.Unix(0, ws)); d > l.cfg.WriteTimeout {
			return fmt.Errorf("%w: a write has not completed for %v (%d records waiting, %d dropped)", ErrStalled, d.Round(time.Second), l.waiting.Load(), l.dropped.Load())
		}
	}
	l.hmu.Lock()
	defer l.hmu.Unlock()
	switch {
	case l.broken != nil:
		return l.broken
	case l.failed != nil:
		return fmt.Errorf("%w: %v (%d records lost since)", ErrWriteFailed, l.failed, l.dropped.Load())
	}
	return nil
}

// acquire takes the writer's slot: at once while the log is free, after waiting at most WriteTimeout otherwise,
// and never while a write has hung for longer than that (it fails at once then).
func (l *Log) acquire() error {
	select {
	case l.lock <- struct{}{}:
		return nil
	default:
	}
	if ws := l.writeStart.Load(); ws != 0 && time.Since(time.Unix(0, ws)) > l.cfg.WriteTimeout {
		return fmt.Errorf("%w: a write has not completed for over %v", ErrStalled, l.cfg.WriteTimeout)
	}
	if n := l.waiting.Add(1); int(n) > l.cfg.MaxWaiting {
		l.waiting.Add(-1)
		return fmt.Errorf("%w: %d writes are already waiting", ErrStalled, n-1)
	}
	defer l.waiting.Add(-1)
	t := time.NewTimer(l.cfg.WriteTimeout)
	defer t.Stop()
	select {
	case l.lock <- struct{}{}:
		return nil
	case <-t.C:
		return fmt.Errorf("%w: no write completed within %v", ErrStalled, l.cfg.WriteTimeout)
	}
}

func (l *Log) release() { <-l.lock }

// usable returns the sticky error (a torn line, Close), if any. Called with lock held.
func (l *Log) usable() error {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	return l.broken
}

// lose counts a record that was not written, and why.
func (l *Log) lose(err error) {
	if errors.Is(err, ErrClosed) {
		return
	}
	l.dropped.Add(1)
	l.hmu.Lock()
	l.lossWhy = err.Error()
	l.hmu.Unlock()
}

// noteLossLocked writes a loss line for the records dropped since the last one, if any.
func (l *Log) noteLossLocked() error {
	n := l.dropped.Load()
	if n == 0 {
		return nil
	}
	l.hmu.Lock()
	why := l.lossWhy
	l.hmu.Unlock()
	line := &lossLine{Time: l.cfg.Now().UTC(), Component: l.cfg.Component, Lost: &Loss{Records: n, Reason: why}, Seq: l.seq + 1, PrevHash: l.prev}
	if err := l.writeLocked(line); err != nil {
		return err
	}
	l.dropped.Add(^(n - 1)) // subtract n: records dropped meanwhile stay counted
	return l.afterLineLocked()
}

// writeLocked marshals one line (v carries its Seq and PrevHash) and writes it, then advances the chain.
func (l *Log) writeLocked(v any) error {
	l.buf.Reset()
	if err := l.enc.Encode(v); err != nil { // appends the newline
		return fmt.Errorf("failed to marshal audit record: %w", err)
	}
	line := l.buf.Bytes()
	if len(line)-1 > MaxLineBytes {
		l.shrinkBuf()
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrRecordTooLarge, len(line)-1, MaxLineBytes)
	}
	l.writeStart.Store(time.Now().UnixNano())
	n, err := l.w.Write(line)
	l.writeStart.Store(0)
	l.hmu.Lock()
	defer l.hmu.Unlock()
	if err != nil {
		l.failed = err
		if n > 0 {
			l.broken = fmt.Errorf("audit log unusable: an earlier write failed after %d of %d bytes: %w", n, len(line), err)
		}
		l.shrinkBuf()
		return fmt.Errorf("failed to write audit record: %w", err)
	}
	l.failed = nil
	l.seq++
	l.prev = hashLine(line[:len(line)-1])
	l.shrinkBuf()
	return nil
}

// afterLineLocked counts a line written, and writes a checkpoint when CheckpointEvery lines have passed since the
// last, or arms the CheckpointInterval timer at the first line after one.
func (l *Log) afterLineLocked() error {
	if !l.signing() {
		return nil
	}
	l.since++
	if l.since >= l.cfg.CheckpointEvery {
		return l.checkpointLocked(CheckpointPeriodic)
	}
	if l.timer == nil && l.timerSet.CompareAndSwap(false, true) {
		l.timer = time.AfterFunc(l.cfg.CheckpointInterval, l.intervalCheckpoint)
	}
	return nil
}

// intervalCheckpoint runs on CheckpointInterval's timer.
func (l *Log) intervalCheckpoint() {
	if err := l.acquire(); err != nil {
		l.timerSet.Store(false) // the next line written arms it again
		return
	}
	defer l.release()
	l.timerSet.Store(false)
	l.timer = nil
	if !l.closed && l.since > 0 && l.usable() == nil {
		l.checkpointLocked(CheckpointPeriodic) // a failure shows in Err
	}
}

func (l *Log) signing() bool { return l.cfg.SigningKey != nil }

// checkpointLocked writes a signed checkpoint of the chain so far.
func (l *Log) checkpointLocked(reason string) error {
	if err := l.noteLossLocked(); err != nil {
		return err
	}
	now := l.cfg.Now().UTC()
	c := &Checkpoint{Reason: reason, Component: l.cfg.Component, Seq: l.seq + 1, Head: l.prev, Time: now, Every: l.cfg.CheckpointEvery, KeyID: l.cfg.KeyID}
	c.Signature = ed25519.Sign(l.cfg.SigningKey, c.signedBytes())
	if err := l.writeLocked(&checkpointLine{Time: now, Component: l.cfg.Component, Checkpoint: c, Seq: c.Seq, PrevHash: c.Head}); err != nil {
		return err
	}
	l.since = 0
	if l.timer != nil && l.timer.Stop() {
		l.timer = nil
		l.timerSet.Store(false)
	}
	return nil
}

// shrinkBuf drops a buffer grown by an unusually large record, so that the Log does not keep it.
func (l *Log) shrinkBuf() {
	if l.buf.Cap() > 64<<10 {
		l.buf = bytes.Buffer{}
	}
}

// Close writes a shutdown checkpoint (with a signing key), makes later Writes fail with ErrClosed and, for a Log
// from Open, syncs and closes the file. It may be called more than once; only the first call returns an error.
// A stalled writer makes it fail after WriteTimeout without a shutdown checkpoint, the file left open: the write
// in progress still holds it.
func (l *Log) Close() error {
	if err := l.acquire(); err != nil {
		return fmt.Errorf("failed to close audit log: %w", err)
	}
	defer l.release()
	if l.closed {
		return nil
	}
	var err error
	if l.signing() && l.usable() == nil {
		if cerr := l.checkpointLocked(CheckpointShutdown); cerr != nil {
			err = fmt.Errorf("failed to write the shutdown checkpoint: %w", cerr)
		}
	}
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.closed = true
	l.hmu.Lock()
	l.broken = ErrClosed
	l.hmu.Unlock()
	if l.closer != nil {
		if f, ok := l.closer.(*os.File); ok {
			if serr := f.Sync(); err == nil && serr != nil {
				err = serr
			}
		}
		if cerr := l.closer.Close(); err == nil && cerr != nil {
			err = cerr
		}
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
