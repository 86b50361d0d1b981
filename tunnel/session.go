package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-dev/warren/tunnel/internal/yamux"
)

// ErrClosed is returned by Open and Accept once the session has ended. It wraps net.ErrClosed: an ended session is
// normal shutdown, not a failure to report.
var ErrClosed = fmt.Errorf("tunnel closed: %w", net.ErrClosed)

// Session is one tunnel. All methods may be called concurrently. Close ends it; Done tells when it has ended, for
// whatever reason (Close, the peer leaving, a failed keepalive).
//
// A session runs two goroutines, yamux's receive and send loops. Its WebSocket pings and yamux keepalives run
// from timers, so that an idle session holds no goroutine and no buffer beyond those.
type Session struct {
	cfg   Config
	log   *slog.Logger
	mux   *yamux.Session
	conn  *wsConn
	slots chan struct{} // one token per open stream: bounds Config.MaxStreams

	pingTimer, pongTimer, keepTimer *time.Timer
	pongPending                     atomic.Bool

	mu    sync.Mutex
	ended bool           // no timer callback starts once set
	cbs   sync.WaitGroup // timer callbacks running
	onEnd []func()       // OnEnd's functions, run once the connection closes

	closeOnce sync.Once
	closeErr  error

	// header is the gateway's 101 answer's header, on the connector's side; nil on the gateway's.
	header http.Header
}

// Header returns, on the connector's side, the header of the gateway's answer to the upgrade (Upgrade sends the
// header set on its ResponseWriter); nil on the gateway's side. The caller must not modify it.
func (s *Session) Header() http.Header { return s.header }

func newSession(conn *wsConn, gatewaySide bool, cfg Config) (*Session, error) {
	s := &Session{
		cfg:   cfg,
		log:   cfg.Logger,
		conn:  conn,
		slots: make(chan struct{}, cfg.MaxStreams),
	}
	conn.onPong = s.pong
	conn.onClose = s.stopTimers
	var err error
	if gatewaySide {
		s.mux, err = yamux.Client(conn, cfg.yamux())
	} else {
		s.mux, err = yamux.Server(conn, cfg.yamux())
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("failed to start yamux session: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.pongTimer = time.AfterFunc(time.Hour, s.pongLate)
		s.pongTimer.Stop()
		s.pingTimer = time.AfterFunc(cfg.PingInterval, s.ping)
		// The first keepalive at once: its round trip is what the streams' window autotuning needs to start.
		s.keepTimer = time.AfterFunc(0, s.keepalive)
	}
	return s, nil
}

// enter admits a timer callback unless the session has ended; the callback calls s.cbs.Done when it returns.
func (s *Session) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.mux.IsClosed() {
		return false
	}
	s.cbs.Add(1)
	return true
}

// stopTimers runs when the connection closes, whoever closed it, and starts the OnEnd functions.
func (s *Session) stopTimers() {
	s.mu.Lock()
	s.ended = true
	for _, t := range []*time.Timer{s.pingTimer, s.pongTimer, s.keepTimer} {
		if t != nil {
			t.Stop()
		}
	}
	fs := s.onEnd
	s.onEnd = nil
	s.mu.Unlock()
	for _, f := range fs {
		go f() // not here: the caller may hold yamux's shutdown lock, which Close takes
	}
}

// OnEnd arranges for f to run in its own goroutine once the session has ended (at once if it has already). Unlike
// waiting on Done, it holds no goroutine meanwhile: the gateway uses it so that an idle connector costs no
// goroutine of its own.
func (s *Session) OnEnd(f func()) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		go f()
		return
	}
	s.onEnd = append(s.onEnd, f)
	s.mu.Unlock()
}

// ping sends a WebSocket ping so that intermediaries see traffic and a peer that stopped answering is noticed even
// when yamux has nothing to say; the pong must come within PingTimeout.
func (s *Session) ping() {
	if !s.enter() {
		return
	}
	defer s.cbs.Done()
	if !s.pongPending.Swap(true) {
		s.pongTimer.Reset(s.cfg.PingTimeout)
	}
	if err := s.conn.ping(); err != nil {
		s.mux.Close() // not s.Close: that waits for this callback
		return
	}
	s.pingTimer.Reset(s.cfg.PingInterval)
}

func (s *Session) pong() {
	s.pongPending.Store(false)
	s.pongTimer.Stop()
}

func (s *Session) pongLate() {
	if !s.enter() {
		return
	}
	defer s.cbs.Done()
	s.log.Info("tunnel peer did not answer a ping, closing", "timeout", s.cfg.PingTimeout.String())
	s.mux.Close()
}

// keepalive is yamux's ping: it crosses both yamux loops of the peer, so it also notices a peer whose WebSocket
// still answers but whose session is stuck.
func (s *Session) keepalive() {
	if !s.enter() {
		return
	}
	defer s.cbs.Done()
	if _, err := s.mux.Ping(); err != nil {
		if !s.mux.IsClosed() {
			s.log.Info("tunnel peer did not answer a keepalive, closing", "err", err)
		}
		s.mux.Close()
		return
	}
	s.keepTimer.Reset(s.cfg.KeepAliveInterval)
}

// Open opens a stream to the peer. It waits for a free stream slot (Config.MaxStreams) until ctx is done.
func (s *Session) Open(ctx context.Context) (net.Conn, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("failed to open stream: %w", ctx.Err())
	case <-s.mux.CloseChan():
		return nil, ErrClosed
	}
	st, err := s.mux.OpenStream()
	if err != nil {
		<-s.slots
		if s.mux.IsClosed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("failed to open stream: %w", err)
	}
	return &stream{Stream: st, slots: s.slots}, nil
}

// Accept waits for the next stream the peer opens. With Addr and Close it makes the session a net.Listener, so an
// http.Server can serve on it.
func (s *Session) Accept() (net.Conn, error) { return s.accept(context.Background()) }

func (s *Session) accept(ctx context.Context) (net.Conn, error) {
	select {
	case s.slots <- struct{}{}:
	case <-s.mux.CloseChan():
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ErrClosed
	}
	st, err := s.mux.AcceptStreamWithContext(ctx)
	if err != nil {
		<-s.slots
		if s.mux.IsClosed() || ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("failed to accept stream: %w", err)
	}
	return &stream{Stream: st, slots: s.slots}, nil
}

// DrainListener returns the session as a net.Listener whose Close only stops accepting: it asks the peer to open
// no more streams (yamux GoAway) and leaves the open ones running. http.Server.Shutdown on it thus finishes the
// requests in flight while the peer sends new ones elsewhere. The session itself stays open until Close.
func (s *Session) DrainListener() net.Listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &drainListener{s: s, ctx: ctx, cancel: cancel}
}

type drainListener struct {
	s      *Session
	ctx    context.Context
	cancel context.CancelFunc
}

func (l *drainListener) Accept() (net.Conn, error) { return l.s.accept(l.ctx) }
func (l *drainListener) Addr() net.Addr            { return l.s.Addr() }
func (l *drainListener) Close() error {
	l.cancel()
	if err := l.s.mux.GoAway(); err != nil && !l.s.mux.IsClosed() {
		return err
	}
	return nil
}

// Addr returns the session's local address.
func (s *Session) Addr() net.Addr { return s.mux.Addr() }

// MaxStreams returns the bound on the streams open at once (Config.MaxStreams, defaults applied).
func (s *Session) MaxStreams() int { return s.cfg.MaxStreams }

// NumStreams returns the number of streams open now.
func (s *Session) NumStreams() int { return s.mux.NumStreams() }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// Close ends the session and every stream on it, and waits for the session's timer callbacks. It is idempotent.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.mux.Close() // closes the WebSocket too, which unblocks yamux's loops and stops the timers
		s.stopTimers()
		s.cbs.Wait()
		if errors.Is(s.closeErr, net.ErrClosed) {
			s.closeErr = nil
		}
	})
	return s.closeErr
}
