package tunnel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
)

// ErrClosed is returned by Open and Accept once the session has ended. It wraps net.ErrClosed: an ended session is
// normal shutdown, not a failure to report.
var ErrClosed = fmt.Errorf("tunnel closed: %w", net.ErrClosed)

// ErrNotTunnel is returned by Upgrade, before anything is written, for a request that is not a WebSocket upgrade
// offering Subprotocol.
var ErrNotTunnel = errors.New("not a warren tunnel upgrade: expected a WebSocket upgrade with subprotocol " + Subprotocol)

// Session is one tunnel. All methods may be called concurrently. Close ends it; Done tells when it has ended, for
// whatever reason (Close, the peer leaving, a failed keepalive).
type Session struct {
	cfg      Config
	log      *slog.Logger
	mux      *yamux.Session
	conn     *wsConn
	slots    chan struct{} // one token per open stream: bounds Config.MaxStreams
	cancel   context.CancelFunc
	pingDone chan struct{} // closed when pingLoop has returned

	closeOnce sync.Once
	closeErr  error
}

func newSession(ws *websocket.Conn, gatewaySide bool, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	conn := &wsConn{
		Conn:    websocket.NetConn(ctx, ws, websocket.MessageBinary),
		ws:      ws,
		timeout: cfg.WriteTimeout,
	}
	var (
		mux *yamux.Session
		err error
	)
	if gatewaySide {
		mux, err = yamux.Client(conn, cfg.yamux())
	} else {
		mux, err = yamux.Server(conn, cfg.yamux())
	}
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("failed to start yamux session: %w", err)
	}
	s := &Session{
		cfg:      cfg,
		log:      cfg.Logger,
		mux:      mux,
		conn:     conn,
		slots:    make(chan struct{}, cfg.MaxStreams),
		cancel:   cancel,
		pingDone: make(chan struct{}),
	}
	go s.pingLoop(ctx)
	return s, nil
}

// pingLoop sends WebSocket pings so that intermediaries see traffic and a peer that stopped answering is noticed
// even when yamux has nothing to say. It is owned by the session: Close cancels it and waits.
func (s *Session) pingLoop(ctx context.Context) {
	defer close(s.pingDone)
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.mux.CloseChan():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, s.cfg.PingTimeout)
			err := s.conn.ws.Ping(pctx)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					s.log.Info("tunnel peer did not answer a ping, closing", "err", err)
				}
				s.mux.Close() // not s.Close: that waits for this loop
				return
			}
		}
	}
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

// NumStreams returns the number of streams open now.
func (s *Session) NumStreams() int { return s.mux.NumStreams() }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// Close ends the session and every stream on it, and waits for the session's goroutines. It is idempotent.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.mux.Close() // closes the WebSocket too, which unblocks yamux's loops
		s.cancel()
		<-s.pingDone
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
	closeOnce sync.Once
}

func (st *stream) Close() error {
	err := st.Stream.Close()
	st.closeOnce.Do(func() { <-st.slots })
	return err
}

// CloseWrite half-closes the stream: the peer reads EOF, and can still write. httputil.ReverseProxy uses it when
// one side of an upgraded connection finishes.
func (st *stream) CloseWrite() error { return st.Stream.Close() }

// wsConn is the WebSocket seen as a net.Conn, with a deadline set before every write so that a peer that stopped
// reading cannot block the session's writer for ever.
type wsConn struct {
	net.Conn
	ws      *websocket.Conn
	timeout time.Duration
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// Close drops the connection at once: yamux has already told the peer what it needed to, and WebSocket's closing
// handshake would hold the caller up to 5 s when the peer is gone.
func (c *wsConn) Close() error {
	c.ws.CloseNow()
	c.Conn.Close() // stops the NetConn's timers; its error repeats the one above
	return nil
}

// Upgrade turns a gateway-side HTTP request into a tunnel session. The caller authenticates the request first. When
// the request is not a tunnel upgrade Upgrade returns ErrNotTunnel having written nothing, so that the caller
// answers in its own format.
func Upgrade(w http.ResponseWriter, r *http.Request, cfg Config) (*Session, error) {
	if !isTunnelUpgrade(r) {
		return nil, ErrNotTunnel
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to upgrade tunnel: %w", err)
	}
	return newSession(ws, true, cfg)
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

// Dial opens a tunnel to the gateway's WebSocket endpoint url (wss://HOST/connect) from the connector's side.
func Dial(ctx context.Context, url string, o DialOptions) (*Session, error) {
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient:      o.HTTPClient,
		HTTPHeader:      o.Header,
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, handshakeError(resp)
		}
		return nil, err
	}
	if ws.Subprotocol() != Subprotocol {
		ws.CloseNow()
		return nil, fmt.Errorf("gateway did not agree to subprotocol %s: upgrade the gateway", Subprotocol)
	}
	return newSession(ws, false, o.Config)
}

// handshakeError reads the reason from a refused upgrade; websocket.Dial has already buffered up to 1 KiB of body.
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
