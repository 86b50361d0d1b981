package main

// The processes the driver starts: each is this binary run with a role as its first argument. A role prints
// "ADDR <host:port>" (and, when it has one, "CTRL <host:port>", a loopback control server with pprof) on stdout
// once it is ready, then serves until killed or until its standard input closes (so that nothing outlives the
// driver).

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	_ "net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rancher/remotedialer"
	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/connector"
	"github.com/warren-dev/warren/gateway"
	"github.com/warren-dev/warren/internal/wire"
	"github.com/warren-dev/warren/tunnel"
)

// env is what the driver prepared in its work directory: the TLS material and the warren keys and tokens.
type env struct {
	dir string
}

func (e env) path(name string) string { return filepath.Join(e.dir, name) }

func (e env) serverTLS() *tls.Config {
	cert, err := tls.LoadX509KeyPair(e.path("cert.pem"), e.path("key.pem"))
	must(err)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

func (e env) roots() *x509.CertPool {
	pem, err := os.ReadFile(e.path("ca.pem"))
	must(err)
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pem)
	return p
}

func (e env) read(name string) string {
	b, err := os.ReadFile(e.path(name))
	must(err)
	return strings.TrimSpace(string(b))
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// ready announces the role's addresses and ends the process when the driver goes away.
func ready(addr, ctrl string) {
	if ctrl == "" {
		ctrl = "-"
	}
	fmt.Printf("ADDR %s\nCTRL %s\n", addr, ctrl)
	os.Stdout.Sync()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
}

// control serves pprof and a few bench hooks on a loopback port: /gc (collect and return freed memory to the OS, so
// that RSS reflects live memory), and extra handlers of the role.
func control(extra map[string]http.HandlerFunc) string {
	mux := http.NewServeMux()
	mux.Handle("/debug/pprof/", http.DefaultServeMux)
	mux.HandleFunc("/gc", func(w http.ResponseWriter, _ *http.Request) {
		for range 3 {
			runtime.GC()
		}
		debug.FreeOSMemory()
		fmt.Fprintln(w, "ok")
	})
	for p, h := range extra {
		mux.HandleFunc(p, h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go http.Serve(ln, mux)
	return ln.Addr().String()
}

func listen(addr string) net.Listener {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	must(err)
	return ln
}

// logChunk is what the backend streams for pod logs: text lines, like a container's output.
var logChunk = func() []byte {
	var b []byte
	for i := 0; len(b) < 64<<10; i++ {
		b = append(b, fmt.Sprintf("2026-01-01T00:00:00.%06dZ INFO request served path=/api/v1/things id=%08d status=200\n", i, i)...)
	}
	return b[:64<<10]
}()

// podJSON is the small object of the latency and concurrency phases.
var podJSON = []byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"y","namespace":"x","uid":"0b7e8a4e-6c2f-4a3e-9a55-1c1f2f8a9e11","resourceVersion":"4711","creationTimestamp":"2026-01-01T00:00:00Z","labels":{"app":"bench"}},"spec":{"nodeName":"node-1","containers":[{"name":"app","image":"registry.example/app:1.0"}]},"status":{"phase":"Running","podIP":"10.0.0.7"}}`)

// runBackend stands in for the Kubernetes API server: HTTPS (HTTP/2 offered, as the API server does), a small Pod
// at /api/v1/namespaces/x/pods/y, and N log bytes at .../pods/y/log?limitBytes=N, streamed chunked.
func runBackend(args []string) {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	dir := fs.String("dir", "", "work directory")
	fs.Parse(args)
	e := env{*dir}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(podJSON)))
		w.Write(podJSON)
	})
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}/log", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("limitBytes"), 10, 64)
		w.Header().Set("Content-Type", "text/plain")
		for n > 0 {
			chunk := logChunk
			if int64(len(chunk)) > n {
				chunk = chunk[:n]
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
			n -= int64(len(chunk))
		}
	})
	srv := &http.Server{Handler: mux, TLSConfig: e.serverTLS(), ErrorLog: log.New(io.Discard, "", 0)}
	ln := listen("")
	ready(ln.Addr().String(), "")
	must(srv.ServeTLS(ln, "", ""))
}

// runTCPSource writes bytes to every connection until it closes: the raw link of the WAN phase.
func runTCPSource(args []string) {
	ln := listen("")
	ready(ln.Addr().String(), "")
	for {
		c, err := ln.Accept()
		must(err)
		go func() {
			defer c.Close()
			for {
				if _, err := c.Write(logChunk); err != nil {
					return
				}
			}
		}()
	}
}

// proxyTransport is the transport of the plain reverse proxy and of the remotedialer front: TLS to the backend,
// enough idle connections that 256 parallel requests do not churn them.
func proxyTransport(e env, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	t := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: e.roots()},
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
	}
	if dial != nil {
		t.DialContext = dial
	}
	return t
}

// runRevProxy is one plain reverse-proxy hop: TLS in, TLS out, no tunnel.
func runRevProxy(args []string) {
	fs := flag.NewFlagSet("revproxy", flag.ExitOnError)
	dir := fs.String("dir", "", "work directory")
	backend := fs.String("backend", "", "backend host:port")
	fs.Parse(args)
	e := env{*dir}
	target, _ := url.Parse("https://" + *backend)
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport:     proxyTransport(e, nil),
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	srv := &http.Server{Handler: rp, TLSConfig: e.serverTLS(), ErrorLog: log.New(io.Discard, "", 0)}
	ln := listen("")
	ready(ln.Addr().String(), control(nil))
	must(srv.ServeTLS(ln, "", ""))
}

// runRDServer is rancher/remotedialer's server side: agents connect to /connect (wss); every other path is a
// reverse proxy to the backend through the agent's tunnel, as Rancher reaches downstream API servers.
func runRDServer(args []string) {
	fs := flag.NewFlagSet("rdserver", flag.ExitOnError)
	dir := fs.String("dir", "", "work directory")
	backend := fs.String("backend", "", "backend host:port, as the agent dials it")
	fs.Parse(args)
	logrus.SetLevel(logrus.ErrorLevel)
	e := env{*dir}
	rd := remotedialer.New(func(r *http.Request) (string, bool, error) {
		return "bench", r.Header.Get("X-Bench-Token") == "agent", nil
	}, remotedialer.DefaultErrorWriter)
	dialer := rd.Dialer("bench")
	target, _ := url.Parse("https://" + *backend)
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: proxyTransport(e, func(ctx context.Context, network, addr string) (net.Conn, error) { return dialer(ctx, network, addr) }),
		ErrorLog:  log.New(io.Discard, "", 0), FlushInterval: -1,
	}
	mux := http.NewServeMux()
	mux.Handle("/connect", rd)
	mux.Handle("/", rp)
	tlsCfg := e.serverTLS()
	tlsCfg.NextProtos = []string{"http/1.1"}
	srv := &http.Server{Handler: mux, TLSConfig: tlsCfg, ErrorLog: log.New(io.Discard, "", 0)}
	ln := listen("")
	ready(ln.Addr().String(), control(map[string]http.HandlerFunc{
		"/count": func(w http.ResponseWriter, _ *http.Request) {
			n := 0
			if rd.HasSession("bench") {
				n = 1
			}
			fmt.Fprint(w, n)
		},
	}))
	must(srv.ServeTLS(ln, "", ""))
}

// runRDClient is remotedialer's agent: it dials the server over wss and dials the backend for it.
func runRDClient(args []string) {
	fs := flag.NewFlagSet("rdclient", flag.ExitOnError)
	dir := fs.String("dir", "", "work directory")
	server := fs.String("server", "", "server host:port")
	fs.Parse(args)
	logrus.SetLevel(logrus.ErrorLevel)
	e := env{*dir}
	ready("-", control(nil))
	d := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: e.roots()}, HandshakeTimeout: 10 * time.Second}
	for {
		remotedialer.ClientConnect(context.Background(), "wss://"+*server+"/connect",
			http.Header{"X-Bench-Token": {"agent"}}, d, func(string, string) bool { return true }, nil)
	}
}

// connectStats counts /connect arrivals, refusals (503) and completed upgrades per second since the process
// started: the storm phase reads them.
type connectStats struct {
	start            time.Time
	mu               sync.Mutex
	arrived, refused map[int]int
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) { s.code = code; s.ResponseWriter.WriteHeader(code) }
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	s.code = http.StatusSwitchingProtocols
	return s.ResponseWriter.(http.Hijacker).Hijack()
}
func (s *statusRecorder) Flush() { s.ResponseWriter.(http.Flusher).Flush() }

// runGateway is warren's gateway as deployed: TLS, caller tokens verified and scope-checked, audit on.
func runGateway(args []string) {
	fs := flag.NewFlagSet("gateway", flag.ExitOnError)
	dir := fs.String("dir", "", "work directory")
	addr := fs.String("listen", "", "listen address (default: a free loopback port)")
	fs.Parse(args)
	e := env{*dir}
	keys, err := auth.LoadPublicKeys(e.path("signing.pub"))
	must(err)
	callers, err := auth.NewVerifier(auth.VerifierConfig{Keys: keys, Audience: auth.AudienceCaller})
	must(err)
	connectors, err := auth.NewVerifier(auth.VerifierConfig{Keys: keys, Audience: auth.AudienceConnector})
	must(err)
	gwKey, err := auth.LoadSigningKey(filepath.Join(e.dir, "gateway-key", auth.SigningKeyFile))
	must(err)
	// The idle and storm phases hold thousands of connectors of one cluster, each its own identity.
	cc := gateway.DefaultConnectorConfig()
	cc.MaxIdentities, cc.MaxTunnelsPerIdentity = 1<<20, 1<<20
	g, err := gateway.New(gateway.Config{
		CallerVerifier:    callers,
		ConnectorVerifier: connectors,
		SigningKey:        gwKey,
		Connectors:        cc,
		Clusters:          []string{"bench"},
		Audit:             audit.New(io.Discard),
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	must(err)
	st := &connectStats{start: time.Now(), arrived: map[int]int{}, refused: map[int]int{}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != wire.PathConnect {
			g.ServeHTTP(w, r)
			return
		}
		sec := int(time.Since(st.start) / time.Second)
		st.mu.Lock()
		st.arrived[sec]++
		st.mu.Unlock()
		rec := &statusRecorder{ResponseWriter: w}
		g.ServeHTTP(rec, r) // holds the tunnel until it ends
		if rec.code == http.StatusServiceUnavailable {
			st.mu.Lock()
			st.refused[int(time.Since(st.start)/time.Second)]++
			st.mu.Unlock()
		}
	})
	srv := &http.Server{Handler: h, TLSConfig: e.serverTLS(), ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	ln := listen(*addr)
	ready(ln.Addr().String(), control(map[string]http.HandlerFunc{
		"/count": func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, g.Connectors("bench")) },
		"/stats": func(w http.ResponseWriter, _ *http.Request) {
			st.mu.Lock()
			defer st.mu.Unlock()
			json.NewEncoder(w).Encode(map[string]any{"arrived": st.arrived, "refused": st.refused})
		},
	}))
	must(srv.ServeTLS(ln, "", ""))
}

// connectorConfig is a connector as deployed: it verifies the gateway's assertion of every request with the
// pinned gateway key, checks the caller's rules again, audits, and reaches the backend with its own bearer token
// through client-go's transport.
func connectorConfig(e env, gatewayAddr, name string) connector.Config {
	pinned, err := auth.LoadPublicKeys(filepath.Join(e.dir, "gateway-key", auth.PublicKeyFile))
	must(err)
	token := e.read("connector.token")
	return connector.Config{
		GatewayURL: "https://" + gatewayAddr,
		Token:      func() (string, error) { return token, nil },
		TLSConfig:  &tls.Config{RootCAs: e.roots()},
		Proxy:      func(*http.Request) (*url.URL, error) { return nil, nil },
		Kube: &rest.Config{
			Host:            "https://" + e.read("backend.addr"),
			BearerToken:     "backend-token",
			TLSClientConfig: rest.TLSClientConfig{CAFile: e.path("ca.pem")},
		},
		GatewayKeys: pinned,
		Audit:       audit.New(io.Discard),
		Cluster:     "bench",
		Name:        name,
		Version:     "bench",
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// runConnector is one warren connector process.
func runConnector(args []string) {
	fs := flag.NewFlagSet("connector", flag.ExitOnError)
	dir := fs.String("dir", "", "work directory")
	gw := fs.String("gateway", "", "gateway host:port")
	fs.Parse(args)
	e := env{*dir}
	c, err := connector.New(connectorConfig(e, *gw, "bench-connector"))
	must(err)
	ready("-", control(map[string]http.HandlerFunc{
		"/count": func(w http.ResponseWriter, _ *http.Request) {
			n := 0
			if c.Connected() {
				n = 1
			}
			fmt.Fprint(w, n)
		},
	}))
	c.Run(context.Background())
}

// runIdleConnectors holds n tunnels to the gateway from one process (tunnel.Dial directly): the idle-cost phase.
func runIdleConnectors(args []string) {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	dir := fs.String("dir", "", "work directory")
	gw := fs.String("gateway", "", "gateway host:port")
	n := fs.Int("n", 10000, "tunnels")
	par := fs.Int("parallel", 32, "dials at once")
	fs.Parse(args)
	e := env{*dir}
	token := e.read("connector.token")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots(), NextProtos: []string{"http/1.1"}},
		DisableKeepAlives: true}}
	var up atomic.Int64
	ready("-", control(map[string]http.HandlerFunc{
		"/count": func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, up.Load()) },
	}))
	sem := make(chan struct{}, *par)
	var sessions sync.Map
	for i := range *n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			_, key, err := ed25519.GenerateKey(rand.Reader)
			must(err)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				s, err := dialIdle(ctx, client, *gw, token, key, fmt.Sprintf("idle-%d", i))
				cancel()
				if err == nil {
					sessions.Store(i, s)
					up.Add(1)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	select {}
}

// dialIdle joins as the connector of key and opens one tunnel, as connector.Run does (without serving it).
func dialIdle(ctx context.Context, client *http.Client, gw, token string, key ed25519.PrivateKey, name string) (*tunnel.Session, error) {
	base := "https://" + gw
	proof, err := auth.NewProof(key, http.MethodPost, base+wire.PathJoin, token, time.Now())
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+wire.PathJoin, http.NoBody)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(wire.HeaderProof, proof)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	var jr wire.JoinResponse
	err = json.NewDecoder(resp.Body).Decode(&jr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil {
		return nil, fmt.Errorf("join: %s (%v)", resp.Status, err)
	}
	if proof, err = auth.NewProof(key, http.MethodGet, base+wire.PathConnect, jr.Credential, time.Now()); err != nil {
		return nil, err
	}
	return tunnel.Dial(ctx, "wss://"+gw+wire.PathConnect, tunnel.DialOptions{
		Header:     http.Header{"Authorization": {"DPoP " + jr.Credential}, wire.HeaderProof: {proof}, wire.HeaderConnectorName: {name}},
		HTTPClient: client,
	})
}

// runStormConnectors runs n real connectors (connector.Run: jittered backoff, Retry-After) in one process.
func runStormConnectors(args []string) {
	fs := flag.NewFlagSet("storm", flag.ExitOnError)
	dir := fs.String("dir", "", "work directory")
	gw := fs.String("gateway", "", "gateway host:port")
	n := fs.Int("n", 2000, "connectors")
	fs.Parse(args)
	e := env{*dir}
	conns := make([]*connector.Connector, *n)
	for i := range conns {
		cfg := connectorConfig(e, *gw, fmt.Sprintf("storm-%d", i))
		c, err := connector.New(cfg)
		must(err)
		conns[i] = c
	}
	ready("-", control(map[string]http.HandlerFunc{
		"/count": func(w http.ResponseWriter, _ *http.Request) {
			up := 0
			for _, c := range conns {
				if c.Connected() {
					up++
				}
			}
			fmt.Fprint(w, up)
		},
	}))
	// Start them over two seconds, as a fleet would be: the phase measures the storm after a restart, not this.
	for i, c := range conns {
		go c.Run(context.Background())
		if i%100 == 99 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	select {}
}
