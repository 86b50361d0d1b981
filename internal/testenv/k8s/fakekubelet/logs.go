package fakekubelet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const (
	streamStdout = "stdout"
	streamStderr = "stderr"
	// maxLogRecord bounds one record read back from a log file; longer records are cut.
	maxLogRecord = 1 << 20
	// timestampFormat is RFC 3339 with nanoseconds always 9 digits wide, as the kubelet writes it with
	// timestamps=true (time.RFC3339Nano drops trailing zeros).
	timestampFormat = "2006-01-02T15:04:05.000000000Z07:00"
)

// logFile is a container log in the CRI format, one record a line: "TIMESTAMP STREAM TAG CONTENT", where TIMESTAMP
// is RFC 3339 with nanoseconds (timestampFormat), STREAM is stdout or stderr and TAG is F for a full line or P for part of a line
// (output that did not end in a newline). All methods may be called concurrently.
type logFile struct {
	path string

	mu       sync.Mutex
	f        *os.File      // append handle; nil once finished
	changed  chan struct{} // closed and replaced after every append, and closed at finish
	finished bool
}

func newLogFile(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to create the container log: %w", err)
	}
	return &logFile{path: path, f: f, changed: make(chan struct{})}, nil
}

// append writes p, output of stream, as records: one per line, and a partial record for a last line without a
// newline. Output after finish is dropped.
func (l *logFile) append(stream string, p []byte) error {
	ts := time.Now().UTC().Format(timestampFormat)
	var b bytes.Buffer
	for len(p) > 0 {
		line, rest, full := bytes.Cut(p, []byte{'\n'})
		tag := "P"
		if full {
			tag = "F"
		}
		b.WriteString(ts + " " + stream + " " + tag + " ")
		b.Write(line)
		b.WriteByte('\n')
		p = rest
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.finished {
		return nil
	}
	_, err := l.f.Write(b.Bytes())
	close(l.changed)
	l.changed = make(chan struct{})
	return err
}

// finish marks the end of the output: followers stop once they have read everything.
func (l *logFile) finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.finished {
		return
	}
	l.finished = true
	_ = l.f.Close()
	l.f = nil
	close(l.changed)
}

// state returns a channel closed at the next append, and whether the output has ended. Read the file after calling
// state, not before: everything appended before state returned is then seen.
func (l *logFile) state() (<-chan struct{}, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed, l.finished
}

// logRecord is one parsed line of a logFile.
type logRecord struct {
	ts      time.Time
	rawTS   []byte
	stream  string
	partial bool
	content []byte
}

func parseLogRecord(line []byte) (logRecord, bool) {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	ts, rest, ok1 := bytes.Cut(line, []byte{' '})
	stream, rest, ok2 := bytes.Cut(rest, []byte{' '})
	tag, content, ok3 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || !ok3 {
		return logRecord{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return logRecord{}, false
	}
	return logRecord{ts: t, rawTS: ts, stream: string(stream), partial: string(tag) == "P", content: content}, true
}

// logOptions are the query parameters of /containerLogs that we honour (those of corev1.PodLogOptions).
type logOptions struct {
	follow     bool
	timestamps bool
	tailLines  int64 // -1: all
	limitBytes int64 // 0: no limit
	since      time.Time
	stream     string // "" for both
}

func parseLogOptions(r *http.Request) (logOptions, error) {
	q := r.URL.Query()
	o := logOptions{tailLines: -1}
	var err error
	parseBool := func(name string) bool {
		v := q.Get(name)
		if v == "" || err != nil {
			return false
		}
		b, perr := strconv.ParseBool(v)
		if perr != nil {
			err = fmt.Errorf("invalid %s %q", name, v)
		}
		return b
	}
	parseInt := func(name string, min int64) int64 {
		v := q.Get(name)
		if v == "" || err != nil {
			return -1
		}
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n < min {
			err = fmt.Errorf("invalid %s %q", name, v)
		}
		return n
	}
	o.follow = parseBool("follow")
	o.timestamps = parseBool("timestamps")
	if parseBool("previous") && err == nil {
		return o, errors.New("previous terminated container not found: containers are never restarted here")
	}
	tail := q.Get("tailLines")
	if tail == "" {
		tail = q.Get("tail") // the kubelet's legacy name; "all" means no limit
	}
	if tail != "" && tail != "all" {
		q.Set("tailLines", tail)
		o.tailLines = parseInt("tailLines", 0)
	}
	if n := parseInt("limitBytes", 1); n > 0 {
		o.limitBytes = n
	}
	if n := parseInt("sinceSeconds", 1); n > 0 {
		o.since = time.Now().Add(-time.Duration(n) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" && err == nil {
		t, perr := time.Parse(time.RFC3339, v)
		if perr != nil {
			return o, fmt.Errorf("invalid sinceTime %q", v)
		}
		o.since = t
	}
	switch v := q.Get("stream"); v {
	case "", corev1.LogStreamAll:
	case corev1.LogStreamStdout:
		o.stream = streamStdout
	case corev1.LogStreamStderr:
		o.stream = streamStderr
	default:
		return o, fmt.Errorf("invalid stream %q", v)
	}
	return o, err
}

// serveLogs is GET /containerLogs/{ns}/{pod}/{container}.
func (k *Kubelet) serveLogs(w http.ResponseWriter, r *http.Request) {
	c, err := k.lookupContainer(r.PathValue("ns"), r.PathValue("pod"), "", r.PathValue("container"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	o, err := parseLogOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f, err := os.Open(c.logs.path)
	if err != nil {
		http.Error(w, "failed to open the container log: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	out := &logWriter{w: w, rc: http.NewResponseController(w), limit: o.limitBytes}
	if err := writeLogs(r.Context(), c.logs, f, o, out); err != nil && !errors.Is(err, errLimitReached) &&
		r.Context().Err() == nil {
		k.log.Debug("container log stream ended", "path", r.URL.Path, "err", err)
	}
}

// errLimitReached ends a log stream at limitBytes.
var errLimitReached = errors.New("limitBytes reached")

// logWriter writes to the HTTP response, flushing every write so followers see lines at once, and stops after
// limit bytes when limit is positive.
type logWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	limit   int64
	written int64
}

func (lw *logWriter) Write(p []byte) (int, error) {
	cut := false
	if lw.limit > 0 && lw.written+int64(len(p)) >= lw.limit {
		p, cut = p[:lw.limit-lw.written], true
	}
	n, err := lw.w.Write(p)
	lw.written += int64(n)
	if err == nil {
		err = lw.rc.Flush()
	}
	if err == nil && cut {
		err = errLimitReached
	}
	return n, err
}

// writeLogs writes the records of f that o selects, then, when following, the records appended later until the
// output ends or ctx is cancelled.
func writeLogs(ctx context.Context, l *logFile, f *os.File, o logOptions, out io.Writer) error {
	br := bufio.NewReaderSize(f, 64<<10)
	var pending []byte // a record read only in part: its writer is still writing
	// readAvailable calls emit for every complete record up to the current end of the file.
	readAvailable := func(emit func(logRecord) error) error {
		for {
			chunk, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				if len(pending) < maxLogRecord {
					pending = append(pending, chunk...)
				}
				continue
			}
			if len(chunk) > 0 {
				pending = append(pending, chunk...)
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			rec, ok := parseLogRecord(pending)
			pending = pending[:0]
			if !ok || (o.stream != "" && rec.stream != o.stream) || rec.ts.Before(o.since) {
				continue
			}
			if err := emit(rec); err != nil {
				return err
			}
		}
	}
	write := func(rec logRecord) error {
		var b bytes.Buffer
		if o.timestamps {
			b.Write(rec.rawTS)
			b.WriteByte(' ')
		}
		b.Write(rec.content)
		if !rec.partial {
			b.WriteByte('\n')
		}
		_, err := out.Write(b.Bytes())
		return err
	}

	changed, finished := l.state()
	if o.tailLines >= 0 {
		var tail []logRecord // the last tailLines records; contents copied, the reader's buffer is reused
		err := readAvailable(func(rec logRecord) error {
			if o.tailLines == 0 {
				return nil
			}
			rec.rawTS = bytes.Clone(rec.rawTS)
			rec.content = bytes.Clone(rec.content)
			if int64(len(tail)) == o.tailLines {
				tail = tail[1:]
			}
			tail = append(tail, rec)
			return nil
		})
		if err != nil {
			return err
		}
		for _, rec := range tail {
			if err := write(rec); err != nil {
				return err
			}
		}
	} else if err := readAvailable(write); err != nil {
		return err
	}
	for o.follow && !finished {
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
		changed, finished = l.state()
		if err := readAvailable(write); err != nil {
			return err
		}
	}
	return nil
}
