// Package tunnel carries many byte streams between a gateway and a connector over one WebSocket connection.
//
// The connector dials out (wss), the gateway upgrades; on top of the WebSocket's binary frames runs a yamux
// session. The gateway is the yamux client: it opens a stream for each HTTP connection it needs. The connector is
// the yamux server: it accepts streams and serves HTTP on them. The WebSocket framing is this package's own (ws.go):
// each yamux data frame goes out as one WebSocket frame, the connector masks in 64 KiB chunks and writes each frame
// to its TLS connection in one system call, and an idle session holds no goroutine or buffer beyond yamux's two
// loops. Any RFC 6455 peer interoperates: message boundaries carry no meaning.
package tunnel

import (
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/warren-dev/warren/tunnel/internal/yamux"
)

// Subprotocol is the WebSocket subprotocol both ends must agree on; it versions the tunnel's framing.
const Subprotocol = "warren.tunnel.v1"

// Config tunes one tunnel session. The zero value is usable: every zero field takes the default documented on it.
//
// With the defaults a dead peer is noticed within 25 s: the yamux keepalive fails after KeepAliveInterval +
// WriteTimeout (20 s), the WebSocket ping after PingInterval + PingTimeout (25 s).
type Config struct {
	// PingInterval is the period of WebSocket pings, which keep idle proxies and load balancers from dropping the
	// connection. Default 15 s.
	PingInterval time.Duration
	// PingTimeout bounds the wait for a pong. Default 10 s.
	PingTimeout time.Duration
	// KeepAliveInterval is the period of yamux pings. Default 10 s.
	KeepAliveInterval time.Duration
	// WriteTimeout bounds every write to the peer (and the yamux ping round trip). Default 10 s.
	WriteTimeout time.Duration
	// CloseTimeout is how long a closed stream waits for the peer to close its side before it is reset. A peer
	// still writing into a stream nobody reads (a caller gone mid-exec) is stopped within it, and the unread data
	// freed. Default 5 s.
	CloseTimeout time.Duration
	// StreamWindow is the largest yamux receive window of one stream, in bytes: it caps a stream's throughput at
	// StreamWindow / round-trip time (16 MiB: 335 MB/s at 50 ms). The window is what the peer may send ahead of the
	// reader. A stream's window starts at yamux's 256 KiB and doubles towards StreamWindow only while its reader
	// drains it within a few round trips (autotuning), so a stream whose reader is slow or stopped holds little, and
	// the growth of all streams together is bounded by WindowBudget. Default 16 MiB.
	StreamWindow uint32
	// WindowBudget bounds, in bytes, the receive window all streams of a session may grant beyond their initial
	// 256 KiB each: what the peer may send ahead of readers that do not read, on top of MaxStreams × 256 KiB. A
	// growth the budget cannot cover is refused (the stream keeps its window), and a stream gives its share back
	// when it closes. Default 64 MiB: four streams at the full 16 MiB window.
	WindowBudget int64
	// MaxStreams bounds the streams open at once on a session. Opening waits for a free slot (or its context);
	// accepting waits too, and yamux resets streams beyond AcceptBacklog meanwhile. Default 1024.
	MaxStreams int
	// AcceptBacklog bounds the streams opened by the peer but not yet accepted. Default 256.
	AcceptBacklog int
	// Logger receives session events; per-frame detail is at debug level. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults a session gives Config's fields left zero, for flags and documentation.
func DefaultConfig() Config {
	return Config{
		PingInterval:      15 * time.Second,
		PingTimeout:       10 * time.Second,
		KeepAliveInterval: 10 * time.Second,
		WriteTimeout:      10 * time.Second,
		CloseTimeout:      5 * time.Second,
		StreamWindow:      16 << 20,
		WindowBudget:      64 << 20,
		MaxStreams:        1024,
		AcceptBacklog:     256,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.PingInterval <= 0 {
		c.PingInterval = d.PingInterval
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = d.PingTimeout
	}
	if c.KeepAliveInterval <= 0 {
		c.KeepAliveInterval = d.KeepAliveInterval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = d.CloseTimeout
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = d.StreamWindow
	}
	if c.WindowBudget <= 0 {
		c.WindowBudget = d.WindowBudget
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = d.MaxStreams
	}
	if c.AcceptBacklog <= 0 {
		c.AcceptBacklog = d.AcceptBacklog
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

func (c Config) yamux() *yamux.Config {
	y := yamux.DefaultConfig()
	y.AcceptBacklog = c.AcceptBacklog
	y.EnableKeepAlive = false // Session runs keepalives from a timer rather than a goroutine per session
	y.ConnectionWriteTimeout = c.WriteTimeout
	y.StreamCloseTimeout = c.CloseTimeout
	y.MaxStreamWindowSize = c.StreamWindow
	y.AutoTuneWindow = true
	y.WindowBudget = &windowBudget{max: c.WindowBudget} // one per session
	y.LogOutput = nil
	y.Logger = slogPrinter{c.Logger}
	return y
}

// windowBudget is a session's Config.WindowBudget, in bytes of receive window.
type windowBudget struct {
	max  int64
	used atomic.Int64
}

func (b *windowBudget) Reserve(n uint32) bool {
	for {
		used := b.used.Load()
		if used+int64(n) > b.max {
			return false
		}
		if b.used.CompareAndSwap(used, used+int64(n)) {
			return true
		}
	}
}

func (b *windowBudget) Release(n uint32) { b.used.Add(-int64(n)) }

// slogPrinter adapts yamux's Printf-style logger to slog; yamux only logs failures, so they go out at debug level:
// the session's end is reported once, with its cause, by the owner.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Print(v ...any) { p.l.Debug("yamux", "detail", v) }
func (p slogPrinter) Printf(format string, v ...any) {
	p.l.Debug("yamux", "detail", fmt.Sprintf(format, v...))
}
func (p slogPrinter) Println(v ...any) { p.l.Debug("yamux", "detail", v) }
