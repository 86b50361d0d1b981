package audit

// Sink receives finished records; *Log is one. gateway.Config.Audit and connector.Config.Audit take one, so a
// program embedding them can send records elsewhere.
type Sink interface {
	Write(Record) error
}

// Health is implemented by a Sink that can tell whether it takes records now, as *Log does (Err). The gateway and
// the connector refuse to serve what their Sink cannot record (fail closed) and say so on /readyz.
type Health interface {
	Err() error
}

// Discard is a Sink that keeps nothing, for callers that want a request's accounting without an audit log.
var Discard Sink = discard{}

type discard struct{}

func (discard) Write(Record) error { return nil }
