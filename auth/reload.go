package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// DefaultCheckInterval is how often reloading key sets and revocation lists look at their files.
const DefaultCheckInterval = 5 * time.Second

// fileStamps records what we last read, to notice changes without reading the files again.
type fileStamps []string

func stampFiles(paths []string) fileStamps {
	s := make(fileStamps, len(paths))
	for i, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			s[i] = fmt.Sprintf("%d/%d/%v", fi.Size(), fi.ModTime().UnixNano(), fi.Mode())
		}
	}
	return s
}

func (s fileStamps) equal(o fileStamps) bool {
	if len(s) != len(o) {
		return false
	}
	for i := range s {
		if s[i] != o[i] {
			return false
		}
	}
	return true
}

// KeyFiles is a KeySet read from public key files (PEM or JWKS, as LoadPublicKeys reads them) that picks up changes:
// a lookup re-reads the files when their size or modification time changed, at most once per CheckInterval, and
// Reload (for SIGHUP) re-reads them at once. A failed reload keeps the keys last read, so a half-written file cannot
// lock everyone out; Err reports it. It starts no goroutines. Safe for concurrent use.
type KeyFiles struct {
	paths []string
	every time.Duration
	now   func() time.Time

	mu        sync.Mutex // guards the fields below
	keys      map[string]crypto.PublicKey
	stamps    fileStamps
	lastCheck time.Time
	err       error
}

// NewKeyFiles reads paths once (an error if that fails) and returns a reloading KeySet. checkEvery <= 0 means
// DefaultCheckInterval.
func NewKeyFiles(checkEvery time.Duration, paths ...string) (*KeyFiles, error) {
	if checkEvery <= 0 {
		checkEvery = DefaultCheckInterval
	}
	k := &KeyFiles{paths: paths, every: checkEvery, now: time.Now}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Key implements KeySet.
func (k *KeyFiles) Key(kid string) (crypto.PublicKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now := k.now(); now.Sub(k.lastCheck) >= k.every {
		k.lastCheck = now
		if !stampFiles(k.paths).equal(k.stamps) {
			k.reloadLocked()
		}
	}
	key, ok := k.keys[kid]
	return key, ok
}

// Refresh looks at the files now, whatever CheckInterval says, and re-reads them if they changed. On error the
// previous keys stay in use.
func (k *KeyFiles) Refresh() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lastCheck = k.now()
	if stampFiles(k.paths).equal(k.stamps) {
		return k.err
	}
	return k.reloadLocked()
}

// Reload re-reads the files now. On error the previous keys stay in use.
func (k *KeyFiles) Reload() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lastCheck = k.now()
	return k.reloadLocked()
}

func (k *KeyFiles) reloadLocked() error {
	stamps := stampFiles(k.paths)
	keys, err := LoadPublicKeys(k.paths...)
	k.stamps = stamps // also after a failure: retry when the file changes again, not on every lookup
	if err != nil {
		k.err = err
		return err
	}
	k.keys, k.err = keys.keys, nil
	return nil
}

// Check re-reads the files if they changed, at most once per check interval as a lookup does, and returns the
// error of the last reload: a monitor (Monitor) calls it so that a broken file is noticed without a lookup.
func (k *KeyFiles) Check() error {
	k.Key("")
	return k.Err()
}

// Err returns the error of the last reload, nil if it succeeded.
func (k *KeyFiles) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// KeyIDs returns the ids of the keys in use, sorted.
func (k *KeyFiles) KeyIDs() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return sortedKeys(k.keys)
}

// KeySets looks a key id up in each set in turn.
type KeySets []KeySet

// Refresh refreshes the sets that are Refreshers and returns the first error.
func (s KeySets) Refresh() error {
	var first error
	for _, ks := range s {
		if r, ok := ks.(Refresher); ok {
			if err := r.Refresh(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// Key implements KeySet.
func (s KeySets) Key(kid string) (crypto.PublicKey, bool) {
	return s.KeyContext(context.Background(), kid)
}

// KeyContext implements ContextKeySet: ctx goes to the sets that take one.
func (s KeySets) KeyContext(ctx context.Context, kid string) (crypto.PublicKey, bool) {
	for _, ks := range s {
		if k, ok := keyContext(ctx, ks, kid); ok {
			return k, true
		}
	}
	return nil, false
}

// RemoteJWKS is a KeySet fetched from a JWKS URL. It refetches when its copy is older than MaxAge, or when asked for
// an unknown key id and the last fetch is older than MinInterval (a rotated key appears quickly, while unknown key
// ids cannot make it hammer the URL). Fetches run in the goroutine that calls Key, one at a time, bounded by the
// caller's context (KeyContext) and Timeout; other callers meanwhile use the keys they have. A failed fetch keeps
// the previous keys. It starts no goroutines.
//
// The key set is what every token is checked against, so it is fetched only over HTTPS (TLS 1.2 or later with
// JWKSClient), a redirect is followed only to HTTPS on the same host, and the document is at most 1 MiB.
type RemoteJWKS struct {
	url    string
	client *http.Client

	// MaxAge and MinInterval default to one hour and one minute. Set them before first use.
	MaxAge, MinInterval time.Duration
	// Timeout bounds a fetch started by Key; default 10 s.
	Timeout time.Duration

	fetching sync.Mutex // held during a fetch
	mu       sync.Mutex // guards the fields below
	keys     map[string]crypto.PublicKey
	fetched  time.Time // last attempt
	err      error
	now      func() time.Time
}

// maxJWKSBytes bounds a fetched JWKS document.
const maxJWKSBytes = 1 << 20

// maxJWKSRedirects bounds the redirects followed for one fetch.
const maxJWKSRedirects = 3

// JWKSClient returns the HTTP client RemoteJWKS uses by default: TLS 1.2 or later, verified against roots (nil:
// the system's), the environment's proxy, and timeouts on every step (connect 10 s, TLS handshake 10 s, response
// headers 10 s, whole fetch 30 s).
func JWKSClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          2,
			IdleConnTimeout:       90 * time.Second,
		},
	}
}

// NewRemoteJWKS fetches url once (an error if that fails) and returns the key set. url must be https. client nil
// means JWKSClient(nil); either way redirects are followed only to https on url's host.
func NewRemoteJWKS(ctx context.Context, url string, client *http.Client) (*RemoteJWKS, error) {
	u, err := neturl.Parse(url)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("JWKS URL %q must be https://HOST/...: keys fetched any other way could be replaced on the way", clip(url))
	}
	if client == nil {
		client = JWKSClient(nil)
	}
	c := *client // the caller's client stays as it is
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > maxJWKSRedirects {
			return fmt.Errorf("more than %d redirects", maxJWKSRedirects)
		}
		if req.URL.Scheme != "https" || !strings.EqualFold(req.URL.Host, u.Host) {
			return fmt.Errorf("refusing the redirect to %s: a JWKS is followed only to https on %s", clip(req.URL.Redacted()), u.Host)
		}
		return nil
	}
	r := &RemoteJWKS{url: url, client: &c, now: time.Now}
	if err := r.Reload(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Key implements KeySet: KeyContext without a caller's context.
func (r *RemoteJWKS) Key(kid string) (crypto.PublicKey, bool) {
	return r.KeyContext(context.Background(), kid)
}

// KeyContext implements ContextKeySet: a refetch it starts ends with ctx, or after Timeout.
func (r *RemoteJWKS) KeyContext(ctx context.Context, kid string) (crypto.PublicKey, bool) {
	r.mu.Lock()
	key, ok := r.keys[kid]
	age := r.now().Sub(r.fetched)
	r.mu.Unlock()
	maxAge, minInterval := r.MaxAge, r.MinInterval
	if maxAge <= 0 {
		maxAge = time.Hour
	}
	if minInterval <= 0 {
		minInterval = time.Minute
	}
	if age < maxAge && (ok || age < minInterval) {
		return key, ok
	}
	if !r.fetching.TryLock() {
		return key, ok // someone else is fetching
	}
	defer r.fetching.Unlock()
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	fctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r.fetch(fctx, ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	key, ok = r.keys[kid]
	return key, ok
}

// Reload fetches the key set now (for SIGHUP or a periodic refresh); on error the previous keys stay in use.
func (r *RemoteJWKS) Reload(ctx context.Context) error {
	r.fetching.Lock()
	defer r.fetching.Unlock()
	return r.fetch(ctx, ctx)
}

// fetch runs with r.fetching held, bounded by ctx; caller is the context of whoever asked. A fetch cut short
// because that caller went away counts as an attempt (so that callers cannot make it hammer the URL), but is not
// the key set's error.
func (r *RemoteJWKS) fetch(ctx, caller context.Context) error {
	keys, err := r.get(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fetched = r.now()
	if err != nil {
		err = fmt.Errorf("failed to fetch JWKS %s: %w", r.url, err)
		if caller.Err() == nil {
			r.err = err
		}
		return err
	}
	r.keys, r.err = keys, nil
	return nil
}

func (r *RemoteJWKS) get(ctx context.Context) (map[string]crypto.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxJWKSBytes)
	}
	return ParseJWKS(data)
}

// Err returns the error of the last fetch, nil if it succeeded.
func (r *RemoteJWKS) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// RevocationList is a file of revoked token ids (jti), one per line; blank lines and lines starting with '#' are
// ignored. It re-reads the file when it changes (checked at most once per interval on lookup or Check) or on
// Reload. A failed read keeps the previous list, and so does a file that disappears: a deleted or unmounted file
// must not un-revoke every token; Err reports it until the file is back. An empty file revokes nothing. Use its
// Revoked method as VerifierConfig.Revoked. Safe for concurrent use; starts no goroutines.
type RevocationList struct {
	path  string
	every time.Duration
	now   func() time.Time

	mu        sync.Mutex // guards the fields below
	ids       map[string]struct{}
	stamp     fileStamps
	lastCheck time.Time
	err       error
}

// maxRevocationBytes bounds a revocation list file.
const maxRevocationBytes = 16 << 20

// NewRevocationList reads path once; a missing, unreadable or malformed file is an error (a mistyped path would
// otherwise revoke nothing, silently: create the file, empty if need be). checkEvery <= 0 means
// DefaultCheckInterval.
func NewRevocationList(path string, checkEvery time.Duration) (*RevocationList, error) {
	if checkEvery <= 0 {
		checkEvery = DefaultCheckInterval
	}
	l := &RevocationList{path: path, every: checkEvery, now: time.Now}
	if err := l.Reload(); err != nil {
		return nil, err
	}
	return l, nil
}

// Revoked reports whether jti is on the list.
func (l *RevocationList) Revoked(jti string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := l.now(); now.Sub(l.lastCheck) >= l.every {
		l.lastCheck = now
		if !stampFiles([]string{l.path}).equal(l.stamp) {
			l.reloadLocked()
		}
	}
	_, ok := l.ids[jti]
	return ok
}

// Refresh looks at the file now, whatever the check interval says, and re-reads it if it changed.
func (l *RevocationList) Refresh() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastCheck = l.now()
	if stampFiles([]string{l.path}).equal(l.stamp) {
		return l.err
	}
	return l.reloadLocked()
}

// Reload re-reads the file now.
func (l *RevocationList) Reload() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastCheck = l.now()
	return l.reloadLocked()
}

// Check re-reads the file if it changed, at most once per check interval as a lookup does, and returns the error
// of the last reload (see KeyFiles.Check).
func (l *RevocationList) Check() error {
	l.Revoked("")
	return l.Err()
}

// Err returns the error of the last reload, nil if it succeeded.
func (l *RevocationList) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Len returns the number of revoked ids.
func (l *RevocationList) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids)
}

func (l *RevocationList) reloadLocked() error {
	l.stamp = stampFiles([]string{l.path})
	ids, err := readRevocations(l.path)
	switch {
	case errors.Is(err, os.ErrNotExist) && l.ids != nil:
		l.err = fmt.Errorf("revocation list %s is gone; still refusing the %d token ids read before: put the file back (empty to revoke nothing)", l.path, len(l.ids))
		return l.err
	case errors.Is(err, os.ErrNotExist):
		l.err = fmt.Errorf("revocation list %s does not exist: create it (empty to revoke nothing)", l.path)
		return l.err
	case err != nil:
		l.err = fmt.Errorf("revocation list %s: %w", l.path, err)
		if l.ids != nil {
			l.err = fmt.Errorf("%w; still refusing the %d token ids read before", l.err, len(l.ids))
		}
		return l.err
	}
	l.ids, l.err = ids, nil
	return nil
}

func readRevocations(path string) (map[string]struct{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) > maxRevocationBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxRevocationBytes)
	}
	ids := map[string]struct{}{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			return nil, fmt.Errorf("line %d: want one token id (jti) per line", n)
		}
		ids[line] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ids, nil
}
