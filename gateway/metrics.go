package gateway

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus series. Labels are bounded: clusters are those connectors authenticated
// for (or configured), codes and decisions a small fixed set.
type metrics struct {
	connectors *prometheus.GaugeVec
	identities *prometheus.GaugeVec
	joins      *prometheus.CounterVec
	refusals   *prometheus.CounterVec
	ended      *prometheus.CounterVec
	// sessionStart has one series per live tunnel (its start time), bounded by MaxIdentities × MaxTunnelsPerIdentity
	// per cluster; a tunnel's series goes when it ends.
	sessionStart *prometheus.GaugeVec
	handshakes   *prometheus.CounterVec
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	// The front door: connections by state, and what it refused before any request was read or authenticated.
	conns        *prometheus.GaugeVec
	doorRefusals *prometheus.CounterVec
	// connectorUnavailable counts a connector's refusals of its own (wire.HeaderRefusal), by cluster and reason
	// (one known value): a connector that cannot audit shows here while the others serve in its place.
	connectorUnavailable *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connectors: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_gateway_connectors", Help: "Live connector tunnels, by cluster.",
		}, []string{"cluster"}),
		identities: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_gateway_connector_identities", Help: "Connector identities (keys) holding a slot, by cluster.",
		}, []string{"cluster"}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_gateway_connector_joins_total", Help: "Accepted connector joins, by cluster and result (new identity, renewed).",
		}, []string{"cluster", "result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_gateway_connector_refusals_total", Help: "Refused connector joins and tunnels, by cluster (- when unknown), endpoint and reason.",
		}, []string{"cluster", "endpoint", "reason"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_gateway_connector_tunnels_ended_total", Help: "Ended connector tunnels, by cluster and reason.",
		}, []string{"cluster", "reason"}),
		sessionStart: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_gateway_connector_tunnel_start_time_seconds",
			Help: "Start of each live connector tunnel (Unix seconds), with its identity, credential, join token and remote address.",
		}, []string{"cluster", "identity", "session", "credential", "join_token", "remote"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_gateway_tunnel_handshakes_total", Help: "Connector handshakes on /connect, by result.",
		}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_gateway_requests_total", Help: "API requests, by cluster, status code and decision.",
		}, []string{"cluster", "code", "decision"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "warren_gateway_request_duration_seconds", Help: "API request duration (streams included), by cluster.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"cluster"}),
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_gateway_connections", Help: "Open connections of the gateway's listeners, by state: unauthenticated (no request on it brought a valid token yet) or authenticated.",
		}, []string{"state"}),
		doorRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_gateway_door_refusals_total", Help: "Connections and requests refused before authentication for holding too much: by which cap (listener, source, client-requests).",
		}, []string{"cap"}),
		connectorUnavailable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_gateway_connector_unavailable_total", Help: "Requests a connector refused for a reason of its own, by cluster and reason (unauditable: it cannot write its audit log); the gateway sends one without a body to the cluster's next connector.",
		}, []string{"cluster", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.connectors, m.identities, m.joins, m.refusals, m.ended, m.sessionStart, m.handshakes, m.requests, m.duration, m.conns, m.doorRefusals, m.connectorUnavailable)
	}
	return m
}

func (m *metrics) request(cluster string, code int, allowed bool, took time.Duration) {
	decision := "deny"
	if allowed {
		decision = "allow"
	}
	m.requests.WithLabelValues(cluster, strconv.Itoa(code), decision).Inc()
	m.duration.WithLabelValues(cluster).Observe(took.Seconds())
}

func (m *metrics) connectorRefused(cluster, endpoint, reason string) {
	m.refusals.WithLabelValues(cluster, endpoint, reason).Inc()
}

func sessionLabels(cs *connectorSession) prometheus.Labels {
	return prometheus.Labels{"cluster": cs.cluster, "identity": cs.ident.id, "session": cs.id, "credential": cs.credID,
		"join_token": cs.joinID, "remote": cs.remote}
}

func (m *metrics) sessionOpened(cs *connectorSession) {
	m.sessionStart.With(sessionLabels(cs)).Set(float64(cs.connectedAt.UnixNano()) / 1e9)
}

func (m *metrics) sessionClosed(cs *connectorSession, reason string) {
	m.sessionStart.Delete(sessionLabels(cs))
	m.ended.WithLabelValues(cs.cluster, reason).Inc()
}
