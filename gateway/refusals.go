package gateway

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/internal/auditrec"
)

// RefusalAuditConfig bounds the audit records of refused requests, so that a flood of refusals (no token needed)
// cannot fill the audit log: each source gets a budget of records written one by one, and past it its refusals are
// counted into summary records (audit.Record.Suppressed) instead. A source is the caller's address (an IPv6 /64),
// and for callers with a valid token (or connector credential), that token too. Zero fields take DefaultConfig's
// values.
type RefusalAuditConfig struct {
	// Rate and Burst are the refusal records per second, and the burst, written one by one per source without a
	// valid token. Default 5/s, burst 50.
	Rate  float64
	Burst int
	// AuthenticatedRate and AuthenticatedBurst are the same for the refusals of one valid token: they name who was
	// refused, and a token's attempts (a join token's thief opening a hundred tunnels) are worth more detail.
	// Default 20/s, burst 200.
	AuthenticatedRate  float64
	AuthenticatedBurst int
	// GlobalRate and GlobalBurst bound the refusal records written one by one of all sources together, against
	// floods from many addresses. Default 200/s, burst 2000.
	GlobalRate  float64
	GlobalBurst int
	// MaxSources bounds the sources tracked at once; the refusals of sources past it are counted together, under
	// the source "*". Default 10000.
	MaxSources int
	// FlushInterval is how often summaries are written while refusals are being counted. Default 1 min.
	FlushInterval time.Duration
	// UnauthenticatedFieldBytes clips each free-text field (path, User-Agent) of the records of callers without a
	// valid token, which are theirs to choose, to this many bytes of JSON. Default 4 KiB.
	UnauthenticatedFieldBytes int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c RefusalAuditConfig) withDefaults() RefusalAuditConfig {
	d := DefaultConfig().RefusalAudit
	if !(c.Rate > 0) {
		c.Rate = d.Rate
	}
	if c.Burst <= 0 {
		c.Burst = d.Burst
	}
	if !(c.AuthenticatedRate > 0) {
		c.AuthenticatedRate = d.AuthenticatedRate
	}
	if c.AuthenticatedBurst <= 0 {
		c.AuthenticatedBurst = d.AuthenticatedBurst
	}
	if !(c.GlobalRate > 0) {
		c.GlobalRate = d.GlobalRate
	}
	if c.GlobalBurst <= 0 {
		c.GlobalBurst = d.GlobalBurst
	}
	if c.MaxSources <= 0 {
		c.MaxSources = d.MaxSources
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = d.FlushInterval
	}
	if c.UnauthenticatedFieldBytes <= 0 {
		c.UnauthenticatedFieldBytes = d.UnauthenticatedFieldBytes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// refusalAudit is the Sink between the gateway's requests and its audit log that applies RefusalAuditConfig.
// Records of allowed requests pass untouched. It holds no goroutine: a timer flushes summaries while there are
// sources to track.
type refusalAudit struct {
	next audit.Sink
	cfg  RefusalAuditConfig

	mu       sync.Mutex
	global   *rate.Limiter
	sources  map[string]*refusalSource
	overflow *refusalSource // sources past MaxSources
	timer    *time.Timer    // armed while sources or overflow exist
	closed   bool           // after Close, records pass through
}

// refusalSource is one source's budget and what it had refused since the last summary.
type refusalSource struct {
	key      string  // the address or /64, as written in SourceIP
	rate     float64 // its bucket's, for the summary's words
	bucket   *rate.Limiter
	lastSeen time.Time
	last     audit.Record // the identity of the last refusal counted (subject, token, cluster)
	counted  audit.Suppressed
}

func newRefusalAudit(next audit.Sink, cfg RefusalAuditConfig) *refusalAudit {
	cfg = cfg.withDefaults()
	return &refusalAudit{next: next, cfg: cfg, global: rate.NewLimiter(rate.Limit(cfg.GlobalRate), cfg.GlobalBurst), sources: map[string]*refusalSource{}}
}

// Err passes the audit log's health on.
func (a *refusalAudit) Err() error { return auditrec.Err(a.next) }

func (a *refusalAudit) Write(r audit.Record) error {
	if r.Decision != audit.DecisionDeny {
		return a.next.Write(r)
	}
	authenticated := r.TokenID != "" || r.Subject != ""
	if !authenticated {
		audit.ClipFields(&r, a.cfg.UnauthenticatedFieldBytes)
	}
	now := a.cfg.Now()
	source := sourcePrefix(r.SourceIP)
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return a.next.Write(r)
	}
	s := a.sources[source+"\x00"+r.TokenID]
	switch {
	case s != nil:
	case len(a.sources) < a.cfg.MaxSources:
		s = &refusalSource{key: source, rate: a.cfg.Rate, bucket: rate.NewLimiter(rate.Limit(a.cfg.Rate), a.cfg.Burst)}
		if authenticated {
			s.rate, s.bucket = a.cfg.AuthenticatedRate, rate.NewLimiter(rate.Limit(a.cfg.AuthenticatedRate), a.cfg.AuthenticatedBurst)
		}
		a.sources[source+"\x00"+r.TokenID] = s
	default:
		if a.overflow == nil {
			a.overflow = &refusalSource{key: "*", rate: a.cfg.Rate, bucket: rate.NewLimiter(0, 0)}
		}
		s = a.overflow
	}
	s.lastSeen = now
	if a.timer == nil {
		a.timer = time.AfterFunc(a.cfg.FlushInterval, a.flushTimer)
	}
	if s.bucket.AllowN(now, 1) && a.global.AllowN(now, 1) {
		a.mu.Unlock()
		return a.next.Write(r)
	}
	s.count(r, now)
	a.mu.Unlock()
	return nil
}

func (s *refusalSource) count(r audit.Record, now time.Time) {
	c := &s.counted
	at := r.Time // when the request came
	if at.IsZero() {
		at = now
	}
	if c.Count == 0 {
		c.Since, c.Statuses = at, map[string]int64{}
	}
	c.Count++
	c.Until = at
	c.Statuses[strconv.Itoa(r.Status)]++
	s.last = r
}

func (a *refusalAudit) flushTimer() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.timer = nil
	summaries := a.collect(false)
	if len(a.sources) > 0 || a.overflow != nil {
		a.timer = time.AfterFunc(a.cfg.FlushInterval, a.flushTimer)
	}
	a.mu.Unlock()
	a.write(summaries)
}

// collect takes the summaries of what was counted, and forgets the sources whose budget has refilled since they
// were last seen (all of them with all). Called with mu held.
func (a *refusalAudit) collect(all bool) []audit.Record {
	var out []audit.Record
	refill := time.Duration(max(float64(a.cfg.Burst)/a.cfg.Rate, float64(a.cfg.AuthenticatedBurst)/a.cfg.AuthenticatedRate) * float64(time.Second))
	now := a.cfg.Now()
	for k, s := range a.sources {
		if s.counted.Count > 0 {
			out = append(out, s.summary())
		}
		if all || now.Sub(s.lastSeen) >= refill {
			delete(a.sources, k)
		}
	}
	if a.overflow != nil {
		if a.overflow.counted.Count > 0 {
			out = append(out, a.overflow.summary())
		}
		a.overflow = nil
	}
	slices.SortFunc(out, func(x, y audit.Record) int { return x.Time.Compare(y.Time) })
	return out
}

func (a *refusalAudit) write(summaries []audit.Record) {
	for _, r := range summaries {
		a.next.Write(r) // a failure is the log's to report (Err, loss lines)
	}
}

// summary is the record of what s counted, which it then forgets.
func (s *refusalSource) summary() audit.Record {
	c := s.counted
	s.counted = audit.Suppressed{}
	codes := slices.SortedFunc(maps.Keys(c.Statuses), func(x, y string) int {
		return cmp.Or(cmp.Compare(c.Statuses[y], c.Statuses[x]), cmp.Compare(x, y))
	})
	var parts []string
	for _, code := range codes {
		parts = append(parts, fmt.Sprintf("%s ×%d", code, c.Statuses[code]))
	}
	status, _ := strconv.Atoi(codes[0])
	r := audit.Record{
		Time: c.Since, Component: audit.ComponentGateway, Decision: audit.DecisionDeny, Status: status, SourceIP: s.key,
		Reason:     fmt.Sprintf("%d refusals from %s not recorded one by one (over %v a second): %s", c.Count, s.key, s.rate, strings.Join(parts, ", ")),
		Suppressed: &c,
	}
	if s.key != "*" {
		r.Cluster, r.Subject, r.TokenID, r.Issuer = s.last.Cluster, s.last.Subject, s.last.TokenID, s.last.Issuer
	}
	return r
}

// Close writes the summaries of everything counted and stops the timer.
func (a *refusalAudit) Close() {
	a.mu.Lock()
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	a.closed = true
	summaries := a.collect(true)
	a.mu.Unlock()
	a.write(summaries)
}

// sourcePrefix is the unit a source's budget is kept for: its address, or its /64 for IPv6, which one host
// usually has whole.
func sourcePrefix(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Unmap().Is4() {
		return ip
	}
	p, _ := a.Prefix(64)
	return p.String()
}
