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
	handshakes *prometheus.CounterVec
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connectors: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_gateway_connectors", Help: "Live connector tunnels, by cluster.",
		}, []string{"cluster"}),
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
	}
	if reg != nil {
		reg.MustRegister(m.connectors, m.handshakes, m.requests, m.duration)
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
