package fakekubelet

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// newServer returns the HTTPS server of the kubelet API. The routes are the real kubelet's: GET and POST on
// /exec/{ns}/{pod}[/{uid}]/{container}, /attach/... and /portForward/{ns}/{pod}[/{uid}]; GET on
// /containerLogs/{ns}/{pod}/{container}; and GET /healthz.
//
// The server's listener watches every connection so that a request's context ends when its connection closes, also
// after the connection was hijacked for SPDY or WebSocket (net/http no longer watches it then): an attach session
// with no stdin would otherwise outlive its client.
func (k *Kubelet) newServer() *http.Server {
	mux := http.NewServeMux()
	for _, p := range []string{"/exec/{ns}/{pod}/{container}", "/exec/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc(p, k.serveExec)
	}
	for _, p := range []string{"/attach/{ns}/{pod}/{container}", "/attach/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc(p, k.serveAttach)
	}
	for _, p := range []string{"/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"} {
		mux.HandleFunc(p, k.servePortForward)
	}
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", k.serveLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })

	k.watched = &watchedListener{Listener: k.ln}
	return &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{k.cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(k.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return k.ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				c = tc.NetConn()
			}
			if wc, ok := c.(*watchedConn); ok {
				ctx, cancel := context.WithCancel(ctx)
				wc.setOnGone(cancel)
				return ctx
			}
			return ctx
		},
	}
}

// streamOptionsKey is the context key of the *remotecommand.Options of an exec or attach request.
type streamOptionsKey struct{}

// checkStreamMethod answers 405 to anything but GET (WebSocket) and POST (SPDY).
func checkStreamMethod(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodPost {
		return true
	}
	w.Header().Set("Allow", "GET, POST")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func (k *Kubelet) serveExec(w http.ResponseWriter, r *http.Request) {
	k.serveRemoteCommand(w, r, true)
}

func (k *Kubelet) serveAttach(w http.ResponseWriter, r *http.Request) {
	k.serveRemoteCommand(w, r, false)
}

func (k *Kubelet) serveRemoteCommand(w http.ResponseWriter, r *http.Request, exec bool) {
	if !checkStreamMethod(w, r) {
		return
	}
	ns, pod, uid, name := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid"), r.PathValue("container")
	if _, err := k.lookupContainer(ns, pod, uid, name); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	k.log.Info("stream", "op", map[bool]string{true: "exec", false: "attach"}[exec], "pod", ns+"/"+pod,
		"container", name, "command", r.URL.Query()["command"], "tty", opts.TTY, "stdin", opts.Stdin,
		"websocket", r.Method == http.MethodGet)
	if !k.beginSession(w) {
		return
	}
	defer k.sessions.Done()
	r = r.WithContext(context.WithValue(r.Context(), streamOptionsKey{}, opts))
	rt := streamRuntime{k: k, namespace: ns}
	if exec {
		remotecommand.ServeExec(w, r, rt, pod, uid, name, r.URL.Query()["command"], opts, streamIdleTimeout,
			streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
	} else {
		remotecommand.ServeAttach(w, r, rt, pod, uid, name, opts, streamIdleTimeout, streamCreationTimeout,
			remotecommand.SupportedStreamingProtocols)
	}
}

func (k *Kubelet) servePortForward(w http.ResponseWriter, r *http.Request) {
	if !checkStreamMethod(w, r) {
		return
	}
	ns, pod, uid := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid")
	p, err := k.lookup(ns, pod, uid)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	k.log.Info("stream", "op", "portforward", "pod", p.key, "websocket", r.Method == http.MethodGet)
	if !k.beginSession(w) {
		return
	}
	defer k.sessions.Done()
	portforward.ServePortForward(w, r, streamRuntime{k: k, namespace: ns}, pod, string(p.uid), opts,
		streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

// beginSession counts a streaming session for shutdown to wait for, or answers 503 if shutdown has begun. Done must
// be called on k.sessions when it returns true.
func (k *Kubelet) beginSession(w http.ResponseWriter) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopping {
		http.Error(w, "the kubelet is shutting down", http.StatusServiceUnavailable)
		return false
	}
	k.sessions.Add(1)
	return true
}

// watchedListener wraps each accepted connection in a watchedConn and keeps the open ones, so that shutdown can
// close also the hijacked ones, which http.Server.Close leaves alone.
type watchedListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[*watchedConn]struct{}
}

func (l *watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	wc := &watchedConn{Conn: c, l: l}
	l.mu.Lock()
	if l.conns == nil {
		l.conns = map[*watchedConn]struct{}{}
	}
	l.conns[wc] = struct{}{}
	l.mu.Unlock()
	return wc, nil
}

// closeConns closes every open connection.
func (l *watchedListener) closeConns() {
	l.mu.Lock()
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

func (l *watchedListener) forget(c *watchedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

// watchedConn calls its onGone function once, when a read fails with anything but a timeout (the peer closed or
// reset the connection) or when it is closed. net/http uses read deadlines to interrupt its own background reads;
// those are timeouts and do not count.
type watchedConn struct {
	net.Conn
	l      *watchedListener
	mu     sync.Mutex
	onGone func() // set by ConnContext before the connection's first read
	gone   bool
}

func (c *watchedConn) setOnGone(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		f()
		return
	}
	c.onGone = f
}

func (c *watchedConn) markGone() {
	c.mu.Lock()
	f := c.onGone
	already := c.gone
	c.gone = true
	c.mu.Unlock()
	if !already && f != nil {
		f()
	}
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			c.markGone()
		}
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.markGone()
	c.l.forget(c)
	return c.Conn.Close()
}
