// Package auditrec builds the audit record of one proxied request, as the gateway and the connector both write
// them: who, what (Kubernetes attributes), the decision and its reason, the status, bytes each way (also across
// an upgrade: exec, attach, port-forward) and the duration.
package auditrec

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/streamframe"
)

// Err returns why sink cannot take records now, or nil: also for a nil sink or one that cannot tell. A caller that
// must not serve what it cannot audit asks before serving.
func Err(sink audit.Sink) error {
	if h, ok := sink.(audit.Health); ok {
		return h.Err()
	}
	return nil
}

// Entry is the record of one request in progress. Its methods are called from the request's handler goroutine; on
// a nil Entry (auditing off) they do nothing.
type Entry struct {
	rec    audit.Record
	start  time.Time
	meter  *meter
	denied bool
}

// Begin starts the record of r and returns the ResponseWriter and request to serve it with, which count bytes.
// With a nil sink it returns a nil Entry and w and r unchanged.
func Begin(sink audit.Sink, component, cluster, requestID string, w http.ResponseWriter, r *http.Request) (*Entry, http.ResponseWriter, *http.Request) {
	if sink == nil {
		return nil, w, r
	}
	m := &meter{ResponseWriter: w}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{ReadCloser: r.Body, n: &m.in}
	}
	e := &Entry{
		start: time.Now(),
		meter: m,
		rec: audit.Record{
			Component: component,
			RequestID: requestID,
			Cluster:   cluster,
			Method:    r.Method,
			Path:      r.URL.RequestURI(),
			SourceIP:  sourceIP(r.RemoteAddr),
			UserAgent: r.UserAgent(),
		},
	}
	return e, m, r
}

// Caller records who made the request.
func (e *Entry) Caller(c *auth.Claims) {
	if e == nil {
		return
	}
	if c == nil {
		return
	}
	e.rec.Subject, e.rec.TokenID, e.rec.Issuer = c.Subject, c.ID, c.Issuer
}

// Assertion records the id of the gateway's assertion the connector accepted the request with.
func (e *Entry) Assertion(id string) {
	if e == nil {
		return
	}
	e.rec.AssertionID = id
}

// AuditID records the Audit-ID the request goes on with.
func (e *Entry) AuditID(id string) {
	if e == nil {
		return
	}
	e.rec.AuditID = id
}

// Attributes records what the request is, in Kubernetes' terms; for exec and attach also the command and container.
func (e *Entry) Attributes(a auth.Attributes) {
	if e == nil {
		return
	}
	e.rec.Verb, e.rec.APIGroup, e.rec.Resource, e.rec.Subresource = a.Verb, a.APIGroup, a.Resource, a.Subresource
	e.rec.Namespace, e.rec.Name = a.Namespace, a.Name
	switch {
	case a.APIGroup != "":
	case a.Resource == "pods" && (a.Subresource == "exec" || a.Subresource == "attach"):
		// The Path already holds the query; Command and Container make it searchable.
		e.rec.Command, e.rec.Container = audit.ExecDetails(parseQuery(e.rec.Path))
	case a.Resource == "nodes" && a.Subresource == "proxy":
		// "get nodes/proxy" may be exec at the kubelet: say what it is.
		if path, ok := a.KubeletPath(); ok {
			e.rec.Kubelet, e.rec.Command, e.rec.Container = audit.KubeletDetails(path, parseQuery(e.rec.Path))
		}
	}
}

// Connector makes the record a connector event (audit.EventConnector*) of cluster, describing the connector. The
// same *ConnectorDetails may be filled in until End.
func (e *Entry) Connector(event, cluster string, d *audit.ConnectorDetails) {
	if e == nil {
		return
	}
	e.rec.Event, e.rec.Cluster, e.rec.Connector = event, cluster, d
}

// Switched records a 101 the handler answered on the ResponseWriter it had before Begin (so that the upgraded
// connection is not counted).
func (e *Entry) Switched() {
	if e == nil {
		return
	}
	e.meter.code.CompareAndSwap(0, http.StatusSwitchingProtocols)
}

// WitnessStdout makes the record carry the SHA-256 and byte count of the stdout of the remote command session
// (exec, attach) the request upgrades to, as it goes to the caller: SPDY when spdy, else WebSocket. Call it before
// the request is served.
func (e *Entry) WitnessStdout(spdy bool) {
	if e == nil {
		return
	}
	e.meter.witness = &stdoutWitness{spdy: spdy, header: e.meter.ResponseWriter.Header()}
}

// Deny records the refusal the handler answers with.
func (e *Entry) Deny(reason string) {
	if e == nil {
		return
	}
	e.denied = true
	e.rec.Reason = reason
}

// Outcome returns the status answered so far and whether the request was refused.
func (e *Entry) Outcome() (status int, denied bool) {
	if e == nil {
		return 0, false
	}
	return e.meter.status(), e.denied
}

// Note records why an allowed request ended early (e.g. the maximum stream length).
func (e *Entry) Note(reason string) {
	if e == nil {
		return
	}
	e.rec.Reason = reason
}

// End completes the record and hands it to sink. A failure to write the audit log is returned for the caller to
// log: the request has been served already.
func (e *Entry) End(sink audit.Sink) error {
	if e == nil {
		return nil
	}
	e.rec.Time = e.start
	e.rec.Status = e.meter.status()
	e.rec.BytesIn = e.meter.in.Load()
	e.rec.BytesOut = e.meter.out.Load()
	e.rec.DurationMS = float64(time.Since(e.start).Microseconds()) / 1000
	if w := e.meter.witness.result(); w != nil {
		n, sum, ok, why := w.Result()
		switch {
		case ok:
			e.rec.StdoutBytes, e.rec.StdoutSHA256 = n, sum
		case e.rec.Reason == "":
			e.rec.Reason = "stdout not witnessed: " + why
		}
	}
	e.rec.Decision = audit.DecisionAllow
	if e.denied {
		e.rec.Decision = audit.DecisionDeny
	}
	return sink.Write(e.rec)
}

// meter counts what goes through a ResponseWriter, and through the connection once it is hijacked for an upgrade.
type meter struct {
	http.ResponseWriter
	code    atomic.Int32
	in, out atomic.Int64
	witness *stdoutWitness // nil unless the session's stdout is witnessed
}

func (m *meter) status() int {
	if c := m.code.Load(); c != 0 {
		return int(c)
	}
	return http.StatusOK
}

func (m *meter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		m.code.CompareAndSwap(0, int32(code))
	}
	m.ResponseWriter.WriteHeader(code)
}

func (m *meter) Write(p []byte) (int, error) {
	m.code.CompareAndSwap(0, http.StatusOK)
	n, err := m.ResponseWriter.Write(p)
	m.out.Add(int64(n))
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush, deadlines).
func (m *meter) Unwrap() http.ResponseWriter { return m.ResponseWriter }

// Hijack hands out the connection wrapped so that an upgraded stream is counted both ways.
func (m *meter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(m.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	m.code.CompareAndSwap(0, http.StatusSwitchingProtocols)
	return &countingConn{Conn: conn, m: m}, brw, nil
}

type countingConn struct {
	net.Conn
	m *meter
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.m.in.Add(int64(n))
	if w := c.m.witness.get(); w != nil && n > 0 {
		w.FromClient(p[:n])
	}
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.m.out.Add(int64(n))
	if w := c.m.witness.get(); w != nil && n > 0 {
		w.FromServer(p[:n])
	}
	return n, err
}

// stdoutWitness starts following a hijacked session at its first byte, when the response headers (the negotiated
// WebSocket subprotocol) have been written: httputil.ReverseProxy sets them after the hijack, before it starts
// copying.
type stdoutWitness struct {
	spdy   bool
	header http.Header
	once   sync.Once
	w      *streamframe.Witness
}

func (s *stdoutWitness) get() *streamframe.Witness {
	if s == nil {
		return nil
	}
	s.once.Do(func() {
		if s.spdy {
			s.w = streamframe.NewSPDYWitness()
		} else {
			s.w = streamframe.NewWebSocketWitness(s.header.Get("Sec-Websocket-Protocol"))
		}
	})
	return s.w
}

// result is the witness if the session started, else nil.
func (s *stdoutWitness) result() *streamframe.Witness {
	if s == nil {
		return nil
	}
	s.once.Do(func() {}) // a session that never moved a byte has no witness
	return s.w
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func sourceIP(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

func parseQuery(requestURI string) map[string][]string {
	u, err := url.ParseRequestURI(requestURI)
	if err != nil {
		return nil
	}
	return u.Query()
}
