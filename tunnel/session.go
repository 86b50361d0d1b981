package tunnel

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/net/http/httpguts"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-dev/warren/tunnel/internal/yamux"
)

// ErrClosed is returned by Open and Accept once the session has ended. It wraps net.ErrClosed: an ended session is
// normal shutdown, not a failure to report.
var ErrClosed = fmt.Errorf("tunnel closed: %w", net.ErrClosed)

// ErrNotTunnel is returned by Upgrade, before anything is written, for a request that is not a WebSocket upgrade
// offering Subprotocol.
var ErrNotTunnel = errors.New("not a warren tunnel upgrade: expected a WebSocket upgrade with subprotocol " + Subprotocol)

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

// stream is one yamux stream holding a slot of its session until closed.
type stream struct {
	*yamux.Stream
	slots     chan struct{}
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Read fails once the stream is closed, as net.Conn promises: yamux's Close is only a half-close, after which
// data the peer still sends would be read (a proxy ending a session on purpose would pass the peer's orderly
// goodbye on, and the caller would take a cut session for a finished one).
func (st *stream) Read(p []byte) (int, error) {
	if st.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := st.Stream.Read(p)
	if st.closed.Load() {
		return 0, net.ErrClosed
	}
	return n, err
}

// Close ends the stream both ways: reads fail at once (a blocked Read is woken), the peer gets a FIN, and yamux
// resets the stream if the peer has not closed its side within Config.CloseTimeout.
func (st *stream) Close() error {
	st.closeOnce.Do(func() {
		st.closed.Store(true)
		st.Stream.SetReadDeadline(time.Now())
		st.closeErr = st.Stream.Close()
		<-st.slots
	})
	return st.closeErr
}

// CloseWrite half-closes the stream: the peer reads EOF, and can still write. httputil.ReverseProxy uses it when
// one side of an upgraded connection finishes.
func (st *stream) CloseWrite() error { return st.Stream.Close() }

// Upgrade turns a gateway-side HTTP request into a tunnel session. The caller authenticates the request first. When
// the request is not a tunnel upgrade Upgrade returns ErrNotTunnel having written nothing, so that the caller
// answers in its own format. Other handshake faults are answered here (400, 426), as WebSocket servers do. Header
// fields the caller set on w (valid names and values only) go with the 101 answer, for the connector's
// Session.Header.
func Upgrade(w http.ResponseWriter, r *http.Request, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	conn, err := upgradeConn(w, r, cfg)
	if err != nil {
		return nil, err
	}
	return newSession(conn, true, cfg)
}

// upgradeConn is the server's WebSocket handshake.
func upgradeConn(w http.ResponseWriter, r *http.Request, cfg Config) (*wsConn, error) {
	if !isTunnelUpgrade(r) {
		return nil, ErrNotTunnel
	}
	if r.Method != http.MethodGet || !headerHasToken(r.Header, "Connection", "upgrade") {
		http.Error(w, "a WebSocket upgrade is a GET with Connection: Upgrade", http.StatusBadRequest)
		return nil, errors.New("failed to upgrade tunnel: not a GET with Connection: Upgrade")
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "unsupported WebSocket version: want 13", http.StatusUpgradeRequired)
		return nil, errors.New("failed to upgrade tunnel: unsupported WebSocket version")
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 16 {
		http.Error(w, "invalid Sec-WebSocket-Key", http.StatusBadRequest)
		return nil, errors.New("failed to upgrade tunnel: invalid Sec-WebSocket-Key")
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "the tunnel needs HTTP/1.1", http.StatusHTTPVersionNotSupported)
		return nil, errors.New("failed to upgrade tunnel: the connection cannot be taken over (HTTP/2?)")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, fmt.Errorf("failed to upgrade tunnel: %w", err)
	}
	// Bytes the server read past the request (a peer that did not wait for the 101) belong to the tunnel.
	var buffered []byte
	if n := brw.Reader.Buffered(); n > 0 {
		peeked, _ := brw.Reader.Peek(n)
		buffered = append([]byte(nil), peeked...)
	}
	var extra strings.Builder
	for k, vs := range w.Header() {
		for _, v := range vs {
			if httpguts.ValidHeaderFieldName(k) && httpguts.ValidHeaderFieldValue(v) {
				extra.WriteString(k + ": " + v + "\r\n")
			}
		}
	}
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		acceptKey(key) + "\r\nSec-WebSocket-Protocol: " + Subprotocol + "\r\n" + extra.String() + "\r\n"
	nc.SetDeadline(time.Now().Add(cfg.WriteTimeout))
	_, err = io.WriteString(nc, resp)
	nc.SetDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("failed to upgrade tunnel: %w", err)
	}
	return newWSConn(nc, buffered, false, nc.LocalAddr(), nc.RemoteAddr(), cfg.WriteTimeout), nil
}

// headerHasToken reports whether a comma-separated header lists token (case-insensitively).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func isTunnelUpgrade(r *http.Request) bool {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return false
	}
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if strings.TrimSpace(p) == Subprotocol {
				return true
			}
		}
	}
	return false
}

// DialOptions configure the connector's side of the handshake.
type DialOptions struct {
	// Header is sent with the upgrade request (the connector's token, its name and version).
	Header http.Header
	// HTTPClient carries the upgrade request: TLS roots, pins, proxy. It must not negotiate HTTP/2.
	// Default http.DefaultClient.
	HTTPClient *http.Client
	Config     Config
}

// HandshakeError is the gateway refusing a tunnel before upgrading it.
type HandshakeError struct {
	StatusCode int
	// Message is the gateway's reason: the message of its Kubernetes Status body, or its text.
	Message string
	// RetryAfter is the gateway's Retry-After, zero when absent.
	RetryAfter time.Duration
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("gateway refused the tunnel: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Dial opens a tunnel to the gateway's WebSocket endpoint url (wss://HOST/connect) from the connector's side. The
// handshake goes through o.HTTPClient, so its TLS settings, pins and proxy apply; ctx bounds the handshake only.
func Dial(ctx context.Context, url string, o DialOptions) (*Session, error) {
	cfg := o.Config.withDefaults()
	conn, header, err := dialConn(ctx, url, o, cfg)
	if err != nil {
		return nil, err
	}
	s, err := newSession(conn, false, cfg)
	if err != nil {
		return nil, err
	}
	s.header = header
	return s, nil
}

// dialConn is the client's WebSocket handshake.
func dialConn(ctx context.Context, url string, o DialOptions, cfg Config) (*wsConn, http.Header, error) {
	httpURL := url
	switch {
	case strings.HasPrefix(url, "wss://"):
		httpURL = "https://" + strings.TrimPrefix(url, "wss://")
	case strings.HasPrefix(url, "ws://"):
		httpURL = "http://" + strings.TrimPrefix(url, "ws://")
	default:
		return nil, nil, fmt.Errorf("failed to dial tunnel: URL %q must start with wss:// or ws://", url)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, httpURL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to dial tunnel: %w", err)
	}
	if o.Header != nil {
		req.Header = o.Header.Clone()
	}
	key := newKey()
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", key)
	req.Header.Set("Sec-WebSocket-Protocol", Subprotocol)
	client := o.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	client, dialed, closeIdle := corkingClient(client)
	defer closeIdle()
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to dial tunnel: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, nil, handshakeError(resp)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, nil, errors.New("failed to dial tunnel: the HTTP client cannot hand over an upgraded connection")
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		rwc.Close()
		return nil, nil, errors.New("failed to dial tunnel: the gateway's answer is not a WebSocket upgrade (a proxy in the way?)")
	}
	if resp.Header.Get("Sec-WebSocket-Protocol") != Subprotocol {
		rwc.Close()
		return nil, nil, fmt.Errorf("gateway did not agree to subprotocol %s: upgrade the gateway", Subprotocol)
	}
	conn := newWSConn(rwc, nil, true, nil, nil, cfg.WriteTimeout)
	if cc := dialed(); cc != nil {
		conn.cork = cc
		conn.local, conn.remote = cc.LocalAddr(), cc.RemoteAddr()
	}
	return conn, resp.Header, nil
}

// ReadRefusal reads the gateway's reason from a refused request to its connector endpoints (the tunnel upgrade, a
// join): status, message and Retry-After.
func ReadRefusal(resp *http.Response) *HandshakeError { return handshakeError(resp) }

// handshakeError reads the reason from a refused upgrade.
func handshakeError(resp *http.Response) *HandshakeError {
	e := &HandshakeError{StatusCode: resp.StatusCode}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	var body []byte
	if resp.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 1024))
	}
	var status struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &status) == nil && status.Message != "" {
		e.Message = status.Message
	} else {
		e.Message = strings.TrimSpace(string(body))
	}
	if e.Message == "" {
		e.Message = "no reason given"
	}
	return e
}
