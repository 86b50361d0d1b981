// Package streams ends the long-running requests (exec, attach, port-forward, watch, logs -f) of caller tokens that
// stopped holding while their streams were open: revoked, signed by a key no longer trusted, or, when asked, expired.
// A token is checked when a request starts; a stream can last hours after that. The gateway and the connector each
// keep one Registry of their open streams by token, and re-check every token that has some once per interval.
//
// The re-checks run from a timer armed only while streams are open: an idle Registry holds no goroutine, a busy one
// at most one (the round in progress), never one per stream.
package streams

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/warren-dev/warren/auth"
)

// Token is what a Registry knows of the token of a stream, as the request's authorization decided it.
type Token struct {
	// Key groups a token's streams: its id (jti), or another stable identity of the token without one.
	Key string
	// ID is the token id (jti), Expiry its expiry (zero: none known).
	ID     string
	Expiry time.Time
	// Claims are the verified claims, when the check needs them (auth.Verifier.Recheck). May be nil.
	Claims *auth.Claims
}

// Ended is the cause (context.Cause) of the context of a stream the Registry ended.
type Ended struct {
	// Reason is one sentence for the caller and the audit log: `token "4be1…" has been revoked`.
	Reason string
	// Err is Check's error.
	Err error
}

func (e *Ended) Error() string { return e.Reason }
func (e *Ended) Unwrap() error { return e.Err }

// Config configures a Registry.
type Config struct {
	// Check tells whether a token still holds; an error ends all its streams, with the error's message as the
	// reason. Required. It is called without the Registry's lock, from the Registry's timer.
	Check func(Token) error
	// Refresh, if set, runs before each round of checks: it makes revocation lists and key files look at their files
	// now (auth.Verifier.Refresh), so that a change ends streams within one Interval.
	Refresh func() error
	// Interval is the time between two rounds of checks. Default auth.DefaultCheckInterval, how often revocation
	// lists and key files are looked at.
	Interval time.Duration
	// Logger receives one line per token whose streams were ended. Default: discard.
	Logger *slog.Logger
}

// Registry tracks open streams by token. All methods may be called concurrently.
type Registry struct {
	cfg Config

	mu     sync.Mutex
	tokens map[string]*tokenStreams // by Token.Key; a token is present only while it has streams
	timer  *time.Timer              // armed while tokens is not empty and the Registry is open
	armed  bool
	closed bool
	rounds sync.WaitGroup // the round in progress, which Close waits for
}

type tokenStreams struct {
	tok     Token
	streams map[*stream]struct{}
}

type stream struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// New returns a Registry. It starts nothing until a stream is tracked.
func New(cfg Config) *Registry {
	if cfg.Interval <= 0 {
		cfg.Interval = auth.DefaultCheckInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{cfg: cfg, tokens: map[string]*tokenStreams{}}
	r.timer = time.AfterFunc(time.Hour, r.round)
	r.timer.Stop()
	return r
}

// Track registers a long-running request of tok. The returned context, derived from ctx, is cancelled with an
// *Ended cause when tok fails a check. untrack removes the stream and cancels the context; call it when the request
// ends (it is idempotent).
func (r *Registry) Track(ctx context.Context, tok Token) (_ context.Context, untrack func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	s := &stream{ctx: ctx, cancel: cancel}
	r.mu.Lock()
	ts := r.tokens[tok.Key]
	if ts == nil {
		ts = &tokenStreams{tok: tok, streams: map[*stream]struct{}{}}
		r.tokens[tok.Key] = ts
	}
	ts.streams[s] = struct{}{}
	if !r.armed && !r.closed {
		r.armed = true
		r.timer.Reset(r.cfg.Interval)
	}
	r.mu.Unlock()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			r.mu.Lock()
			if ts := r.tokens[tok.Key]; ts != nil {
				delete(ts.streams, s)
				if len(ts.streams) == 0 {
					delete(r.tokens, tok.Key)
				}
			}
			r.mu.Unlock()
			cancel(context.Canceled)
		})
	}
}

// Len returns the number of open streams tracked.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ts := range r.tokens {
		n += len(ts.streams)
	}
	return n
}

// CheckNow runs a round of checks at once (after a SIGHUP reload, say) and returns when it is done.
func (r *Registry) CheckNow() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.rounds.Add(1)
	r.mu.Unlock()
	defer r.rounds.Done()
	r.check()
}

// Close stops the checks and waits for a round in progress. Streams keep running; Track still tracks.
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	r.timer.Stop()
	r.armed = false
	r.mu.Unlock()
	r.rounds.Wait()
}

// round is the timer's: one round of checks, then the timer again while streams are open.
func (r *Registry) round() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.rounds.Add(1)
	r.mu.Unlock()
	defer r.rounds.Done()
	r.check()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.armed = len(r.tokens) > 0 && !r.closed
	if r.armed {
		r.timer.Reset(r.cfg.Interval)
	}
}

func (r *Registry) check() {
	if r.cfg.Refresh != nil {
		if err := r.cfg.Refresh(); err != nil {
			// The sources keep what they had: the checks below run against the last good lists.
			r.cfg.Logger.Warn("cannot re-read the revocation list or key files; checking open streams against the last ones read", "err", err)
		}
	}
	r.mu.Lock()
	toks := make([]Token, 0, len(r.tokens))
	for _, ts := range r.tokens {
		toks = append(toks, ts.tok)
	}
	r.mu.Unlock()
	for _, tok := range toks {
		err := r.cfg.Check(tok)
		if err == nil {
			continue
		}
		end := &Ended{Reason: err.Error(), Err: err}
		r.mu.Lock()
		var cancels []context.CancelCauseFunc
		if ts := r.tokens[tok.Key]; ts != nil {
			for s := range ts.streams {
				if s.ctx.Err() == nil { // ended by an earlier round, its request still winding down
					cancels = append(cancels, s.cancel)
				}
			}
			// The streams stay tracked until their requests end and untrack them; a later round may try again.
		}
		r.mu.Unlock()
		for _, cancel := range cancels {
			cancel(end)
		}
		if len(cancels) > 0 {
			r.cfg.Logger.Info("ending the open streams of a token that no longer holds", "token_id", tok.ID,
				"streams", len(cancels), "reason", end.Reason)
		}
	}
}

// EndedBy returns the *Ended that ended ctx, nil if the Registry did not end it.
func EndedBy(ctx context.Context) *Ended {
	var e *Ended
	if errors.As(context.Cause(ctx), &e) {
		return e
	}
	return nil
}

// cleanEndKey marks, in a request's context, a response whose end warren may make clean.
type cleanEndKey struct{}

// WithCleanEnd marks a request whose response streams until someone ends it (a watch, logs -f: auth.Follows):
// when its context is cancelled with a cause clean accepts, ModifyResponse makes the body end with io.EOF instead
// of an error, so that the caller sees the response end, not break. Use it only for such responses: any other cut
// short must look cut, or its reader would take a truncated body for a whole one.
func WithCleanEnd(ctx context.Context, clean func(cause error) bool) context.Context {
	return context.WithValue(ctx, cleanEndKey{}, clean)
}

// ModifyResponse is an httputil.ReverseProxy ModifyResponse (or a part of one): for a request marked WithCleanEnd,
// the body reads io.EOF once the request's context is done with a clean cause. Upgrades (101) are left alone: their
// body is the connection.
func ModifyResponse(resp *http.Response) error {
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Request == nil {
		return nil
	}
	ctx := resp.Request.Context()
	clean, ok := ctx.Value(cleanEndKey{}).(func(error) bool)
	if !ok {
		return nil
	}
	resp.Body = &cleanBody{ReadCloser: resp.Body, ctx: ctx, clean: clean}
	return nil
}

// cleanBody turns the error a read gets once its request is cancelled (the transport aborts the read) into io.EOF
// when the cancellation was a clean end.
type cleanBody struct {
	io.ReadCloser
	ctx   context.Context
	clean func(error) bool
}

func (b *cleanBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.ctx.Err() != nil && b.clean(context.Cause(b.ctx)) {
		err = io.EOF
	}
	return n, err
}
