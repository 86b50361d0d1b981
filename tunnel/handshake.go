package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// ErrNotTunnel is returned by Upgrade, before anything is written, for a request that is not a WebSocket upgrade
// offering Subprotocol.
var ErrNotTunnel = errors.New("not a warren tunnel upgrade: expected a WebSocket upgrade with subprotocol " + Subprotocol)

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
	if r.Method != http.MethodGet || !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
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

// isTunnelUpgrade tells the tunnel's own handshake (a WebSocket asking for Subprotocol) from any other request on
// the same listener. It is not wire.Upgrade's decision (what a proxy forwards as an upgrade): the tunnel ends
// here, and package tunnel stays free of Kubernetes' packages, which wire needs. A tunnel request without
// Connection: Upgrade is refused with 400 by upgradeConn rather than passed on.
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

// acceptKey is Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2).
func acceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func newKey() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}
