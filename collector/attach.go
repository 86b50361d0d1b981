package collector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"
)

// Attach connects to the stdin, stdout and stderr of a collector the container runtime started (pods/attach of an
// ephemeral container or of the node mode's pod) and returns when the session has ended: when the collector's
// output ends, or ctx is done.
type Attach func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error

// AttachOptions configure CollectAttached.
type AttachOptions struct {
	// Mode is ModeEphemeral or ModeNode: the stream's self.json must say so, and the node mode's stream may hold
	// node/ and drift/ entries.
	Mode string
	// Arch is the node's architecture; BinaryDir holds warren-collector-linux-<arch>, whose SHA-256 the running
	// collector's self-hash must equal (the image must carry this warren's collector).
	Arch, BinaryDir string
	// MaxBytes and TimeBudget are the collection's (ModeArgs.Options): they bound what is accepted and for how long.
	MaxBytes   int64
	TimeBudget time.Duration
	// Argv is the collector's command line as the pod spec gave it, for the record.
	Argv []string
}

// ErrNoStream is matched when the collector's session carried no sealed stream: the collector could not find or
// read its target (its stderr, in the error, says why), or it never started.
var ErrNoStream = errors.New("the collector sent no evidence")

// CollectAttached runs one session with a started collector: it sends the session line (a fresh key) on stdin,
// keeps stdin open while the stream lasts (its end stops the collector), opens the sealed stream, checks the
// collector's self-hash against the local binary before passing anything on, and checks every entry against the
// manifest as Collect does. Result.Stdout is the digest of the sealed bytes as received: what the connector's
// witness of the attach hashes.
func CollectAttached(ctx context.Context, attach Attach, o AttachOptions, sink Sink) (*Result, error) {
	if o.Mode != ModeEphemeral && o.Mode != ModeNode {
		return nil, fmt.Errorf("collector: attach mode %q: want %s or %s", o.Mode, ModeEphemeral, ModeNode)
	}
	arch := normalizeArch(o.Arch)
	bin, err := readBounded(filepath.Join(o.BinaryDir, BinaryName(arch)), maxBinary)
	if err != nil {
		return nil, fmt.Errorf("%w: %v: the collector image's self-hash is checked against it (run make build, or point --collector-dir at "+
			"the directory holding %s)", ErrNoBinary, err, BinaryName(arch))
	}
	d := sha256.Sum256(bin)
	want := hex.EncodeToString(d[:])
	if o.TimeBudget <= 0 {
		o.TimeBudget = DefaultTimeBudget
	}
	ctx, cancel := context.WithTimeout(ctx, o.TimeBudget+time.Minute)
	defer cancel()
	res := &Result{Started: time.Now().UTC(), CollectorDigest: "sha256:" + want}

	key := NewSessionKey()
	done := make(chan struct{})
	var closeDone sync.Once
	endStdin := func() { closeDone.Do(func() { close(done) }) }
	defer endStdin()
	stdin := &sessionStdin{line: []byte(HandshakeLine(key)), done: done}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	pr, pw := io.Pipe()
	dw := &digestWriter{w: pw, h: sha256.New()}
	var stderr limitedBuffer
	stderr.max = 64 << 10
	rec := ExecRecord{Argv: o.Argv, Started: time.Now().UTC()}
	var wg sync.WaitGroup
	var attachErr error
	wg.Go(func() {
		attachErr = attach(runCtx, stdin, dw, &stderr)
		pw.CloseWithError(io.EOF)
	})
	maxBytes, maxTotal := o.MaxBytes, int64(-1)
	if maxBytes == 0 {
		maxBytes = DefaultMaxBytes
	}
	if maxBytes >= 0 {
		maxTotal = maxBytes + metaAllowance
	}
	rc := &receiver{sink: sink, wantSHA256: want, maxTotal: maxTotal, res: res}
	if o.Mode == ModeNode {
		rc.prefixes = []string{NodePrefix + "/", DriftPrefix + "/"}
	}
	opened, err := newOpenReader(pr, key)
	var rerr error
	if err == nil {
		rerr = rc.receive(opened)
	} else {
		rerr = err
	}
	if rerr != nil {
		stop()
		pr.CloseWithError(rerr)
	}
	wg.Wait()
	endStdin()
	rec.Ended = time.Now().UTC()
	rec.Stdout = StreamDigest{Bytes: dw.n, SHA256: hexSum(dw.h)}
	if attachErr != nil {
		rec.Err = EscapeName(attachErr.Error())
	}
	res.Execs = []ExecRecord{rec}
	res.Stdout = rec.Stdout
	res.CollectorVersion = rc.self.Version
	res.Ended = time.Now().UTC()
	say := func() string {
		if s := stderr.String(); s != "" {
			return ": the collector said: " + EscapeName(trimNL(s))
		}
		return ""
	}
	switch {
	case dw.n == 0 && attachErr != nil:
		return res, fmt.Errorf("%w: the attach failed: %v%s", ErrNoStream, attachErr, say())
	case dw.n == 0:
		return res, fmt.Errorf("%w%s", ErrNoStream, say())
	case rerr != nil && errors.Is(rerr, ErrSelfHash):
		return res, rerr
	case rerr != nil:
		if attachErr != nil {
			return res, fmt.Errorf("collector stream: %w (the attach ended: %v)%s", rerr, attachErr, say())
		}
		return res, fmt.Errorf("collector stream: %w%s", rerr, say())
	}
	if rc.self.Target == nil || rc.self.Target.Mode != o.Mode {
		return res, &IntegrityError{Path: SelfPath, Reason: "the collector does not say it ran in " + o.Mode + " mode"}
	}
	res.Mode = "collector"
	return res, nil
}

func trimNL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// sessionStdin is the collector's stdin: the session line, then nothing until done is closed (then EOF, which
// stops a collector still writing). It holds nothing of the caller's, so a copy goroutine that outlives the
// session reads EOF and is gone.
type sessionStdin struct {
	mu   sync.Mutex
	line []byte
	done <-chan struct{}
}

func (s *sessionStdin) Read(p []byte) (int, error) {
	s.mu.Lock()
	if len(s.line) > 0 {
		n := copy(p, s.line)
		s.line = s.line[n:]
		s.mu.Unlock()
		return n, nil
	}
	s.mu.Unlock()
	<-s.done
	return 0, io.EOF
}
