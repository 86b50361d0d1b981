package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/bytesize"
)

// acquireUI shows a run: on a terminal, one progress bar per target in flight (bytes, rate, elapsed, and the time
// left at most, the time budget), finished targets as lines above the bars; otherwise plain log lines, and every
// 10 s a line per target in flight. Warnings go to stderr. It implements acquire.Observer.
type acquireUI struct {
	out, errOut io.Writer
	in          io.Reader // the terminal, for Confirm; nil: never asks

	refresh  chan any    // the bars are drawn when tick sends on it (mpb.WithManualRefresh)
	promptMu sync.Mutex  // held while a question waits for its answer
	paused   atomic.Bool // no drawing while a question is asked

	mu     sync.Mutex
	bars   *mpb.Progress // nil without a terminal
	active map[string]*activeTarget
	total  int
	done   int

	stop   chan struct{} // closed by close: ends the ticker
	ticker sync.WaitGroup
}

type activeTarget struct {
	p   *acquire.Progress
	bar *mpb.Bar
}

func newAcquireUI(out, errOut io.Writer, in io.Reader, terminal bool) *acquireUI {
	u := &acquireUI{out: out, errOut: errOut, in: in, active: map[string]*activeTarget{}, stop: make(chan struct{}), refresh: make(chan any, 1)}
	if terminal {
		u.bars = mpb.New(mpb.WithOutput(out), mpb.WithWidth(32), mpb.WithManualRefresh(u.refresh))
	}
	u.ticker.Go(u.tick)
	return u
}

// tick moves the bars (or prints progress lines) from the targets' byte counters.
func (u *acquireUI) tick() {
	period := 200 * time.Millisecond
	if u.bars == nil {
		period = 10 * time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-t.C:
		}
		if u.paused.Load() {
			continue
		}
		if u.bars != nil {
			select {
			case u.refresh <- nil:
			default:
			}
		}
		u.mu.Lock()
		for name, a := range u.active {
			n := a.p.Bytes()
			if a.bar != nil {
				a.bar.SetCurrent(n)
				continue
			}
			el := time.Since(a.p.Started())
			fmt.Fprintf(u.out, "%s  %s  %s  %s/s  %s elapsed\n", stamp(), name, "in progress", bytesize.Format(int64(float64(n)/max(el.Seconds(), 0.001))), el.Round(time.Second))
		}
		u.mu.Unlock()
	}
}

func (u *acquireUI) close() {
	close(u.stop)
	u.ticker.Wait()
	if u.bars != nil {
		u.mu.Lock()
		for _, a := range u.active {
			a.bar.Abort(true)
		}
		u.mu.Unlock()
		u.bars.Wait()
	}
}

func (u *acquireUI) Planned(targets []acquire.TargetInfo) {
	u.mu.Lock()
	u.total = len(targets)
	u.mu.Unlock()
	u.line(fmt.Sprintf("%d target(s)", len(targets)))
}

func (u *acquireUI) Started(t acquire.TargetInfo, p *acquire.Progress) {
	u.mu.Lock()
	defer u.mu.Unlock()
	a := &activeTarget{p: p}
	if u.bars != nil {
		budget := p.Budget
		a.bar = u.bars.New(0, mpb.SpinnerStyle(),
			mpb.PrependDecorators(decor.Name(t.String(), decor.WCSyncSpaceR)),
			mpb.AppendDecorators(
				decor.Current(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace),
				decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace),
				decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace),
				decor.Any(func(decor.Statistics) string {
					left := budget - time.Since(p.Started())
					return "eta ≤ " + max(left, 0).Round(time.Second).String()
				}, decor.WCSyncSpace),
			),
			mpb.BarRemoveOnComplete())
	} else {
		fmt.Fprintf(u.out, "%s  %s  started\n", stamp(), t)
	}
	u.active[t.String()] = a
}

func (u *acquireUI) Finished(t acquire.TargetInfo, r evidence.IndexTarget) {
	u.mu.Lock()
	u.done++
	done, total := u.done, u.total
	a := u.active[t.String()]
	delete(u.active, t.String())
	u.mu.Unlock()
	var msg string
	switch r.Result {
	case evidence.ResultFailed:
		msg = fmt.Sprintf("FAILED    %s: %s", t, r.Reason)
	default:
		msg = fmt.Sprintf("%-9s %s  %s, %d files, %s, sha256 %s", r.Result, t, r.Method, r.Files, bytesize.Format(r.Bytes), prefix(r.SHA256, 12))
	}
	u.line(fmt.Sprintf("[%d/%d] %s", done, total, msg))
	if a != nil && a.bar != nil {
		a.bar.SetTotal(-1, true)
	}
}

// Confirm asks the examiner, on the terminal, whether a mode that leaves a lasting trace may be used in this run
// (acquire.Config.Confirm); the bars stand still while it waits. Anything but y or yes is no; so is the end of the
// input, or ctx ending.
func (u *acquireUI) Confirm(ctx context.Context, mode, what string) bool {
	u.promptMu.Lock()
	defer u.promptMu.Unlock()
	u.paused.Store(true)
	defer u.paused.Store(false)
	fmt.Fprintf(u.errOut, "\nwarren acquire: a container has no shell, and the next mode is %s: %s.\nUse the %s mode in this run? [y/N] ", mode, what, mode)
	answer := make(chan string, 1)
	go func() { // ends with the line, or with the process
		line, _ := bufio.NewReader(u.in).ReadString('\n')
		answer <- strings.ToLower(strings.TrimSpace(line))
	}()
	select {
	case a := <-answer:
		ok := a == "y" || a == "yes"
		if !ok {
			fmt.Fprintf(u.errOut, "not using the %s mode\n", mode)
		}
		return ok
	case <-ctx.Done():
		return false
	}
}

func (u *acquireUI) Warn(message string) {
	if u.bars != nil {
		// Above the bars, where it stays.
		fmt.Fprintf(u.bars, "warning: %s\n", message)
		return
	}
	fmt.Fprintf(u.errOut, "warren acquire: warning: %s\n", message)
}

// line prints above the bars, or as a log line.
func (u *acquireUI) line(s string) {
	if u.bars != nil {
		fmt.Fprintln(u.bars, s)
		return
	}
	fmt.Fprintf(u.out, "%s  %s\n", stamp(), s)
}

func stamp() string { return time.Now().UTC().Format("15:04:05") }

// printSummary prints the table of targets and how to verify the output.
func printSummary(w io.Writer, sum *acquire.Summary, store evidence.Store, out string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTARGET\tMODE\tFILES\tBYTES\tSHA-256\tDURATION\tRESULT")
	acquired, kept := 0, 0
	for _, t := range sum.Index.Targets {
		mode := "-"
		if t.Method != "" {
			mode = t.Mode + "/" + t.Method
		}
		dur := "-"
		if d := t.FinishedOn.Sub(t.StartedOn).Round(100 * time.Millisecond); !t.StartedOn.IsZero() && d > 0 {
			dur = d.String()
		}
		result := t.Result
		switch t.Result {
		case evidence.ResultFailed:
			result += ": " + t.Reason
		case evidence.ResultAcquired:
			acquired++
		case evidence.ResultKept:
			kept++
		}
		name := t.Namespace + "/" + t.Pod + "/" + t.Container
		files, bytes, sum := "-", "-", "-"
		if t.Result != evidence.ResultFailed {
			files, bytes, sum = fmt.Sprint(t.Files), bytesize.Format(t.Bytes), prefix(t.SHA256, 12)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, mode, files, bytes, sum, dur, result)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d acquired, %d kept from an earlier run, %d failed; index %s\n", acquired, kept, sum.Failed, store.Location(evidence.IndexName))
	fmt.Fprintf(w, "verify: warren acquire verify %s --key signing.pub\n", out)
}

func prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb"
}
