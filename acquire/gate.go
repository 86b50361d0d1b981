package acquire

import (
	"errors"
	"io"
	"time"
)

// errGateClosed is what a late stream copy gets once an exec has returned.
var errGateClosed = errors.New("the exec has ended")

// gateCloseWait bounds how long closing a gate waits for a read or write in progress.
const gateCloseWait = 5 * time.Second

// gate passes reads or writes through to an exec's stdin, stdout or stderr until it is closed. client-go's
// executors return as soon as their context is done, while their copy goroutines may still be reading stdin or
// writing stdout: closing the gates when the exec returns waits for a copy in progress (at most gateCloseWait) and
// refuses every later one, so the caller's readers and writers (and their digests) are never touched after Exec
// returned.
type gate struct {
	sem    chan struct{} // held across each read or write, and by close
	r      io.Reader
	w      io.Writer
	closed bool // guarded by sem
}

func newGate(r io.Reader, w io.Writer) *gate { return &gate{sem: make(chan struct{}, 1), r: r, w: w} }

func (g *gate) Read(p []byte) (int, error) {
	g.sem <- struct{}{}
	defer func() { <-g.sem }()
	if g.closed {
		return 0, errGateClosed
	}
	return g.r.Read(p)
}

func (g *gate) Write(p []byte) (int, error) {
	g.sem <- struct{}{}
	defer func() { <-g.sem }()
	if g.closed {
		return 0, errGateClosed
	}
	return g.w.Write(p)
}

// close waits for a read or write in progress and refuses the later ones. A copy stuck past gateCloseWait (a
// writer that stopped reading its pipe) is left to finish on its own; it is the last one.
func (g *gate) close() {
	t := time.NewTimer(gateCloseWait)
	defer t.Stop()
	select {
	case g.sem <- struct{}{}:
		g.closed = true
		<-g.sem
	case <-t.C:
		go func() { // the stuck copy holds sem; mark the gate closed once it lets go
			g.sem <- struct{}{}
			g.closed = true
			<-g.sem
		}()
	}
}
