package collector

import (
	"bytes"
	"regexp"
	"strings"
)

// DefaultRedactEnv are the patterns an environment variable's name is matched against (case-insensitively) before
// its value is stored: a match stores NAME=<redacted>. Acquire applies the same set to the Pod object's env values.
// Over-redacting loses a value; under-redacting leaks a credential into an archive many people read, so the set is
// broad: anything named like a password, secret, token, key, credential, private material, session or connection
// string.
var DefaultRedactEnv = []string{
	`pass`,            // PASSWORD, PASSWD, DB_PASS, PASSPHRASE
	`secret`,          // AWS_SECRET_ACCESS_KEY, CLIENT_SECRET
	`token`,           // GITHUB_TOKEN, AWS_SESSION_TOKEN, VAULT_TOKEN
	`(^|_)keys?($|_)`, // KEY, SSH_KEY, STRIPE_KEY_LIVE (not KEYBOARD, MONKEY)
	`(api|access|private|signing|encryption|master|license)_?key`, // APIKEY, ACCESSKEY
	`credential`,                 // GOOGLE_APPLICATION_CREDENTIALS (a path, but often inlined JSON)
	`(^|_)auth`,                  // AUTH, BASIC_AUTH, AUTHORIZATION, HTTP_AUTH_HEADER
	`private`,                    // PRIVATE_KEY_PEM
	`cookie`,                     // SESSION_COOKIE
	`(^|_)session($|_)`,          // SESSION, FLASK_SESSION_SECRET
	`(^|_)(pat|jwt|bearer)($|_)`, // GITHUB_PAT, JWT, BEARER
	`salt`,                       // HASH_SALT
	`(^|_)dsn$`,                  // SENTRY_DSN, DATABASE_DSN
	`conn(ection)?_?str`,         // CONNECTION_STRING, AZURE_STORAGE_CONNSTR
	`(database|db|redis|mongo(db)?|postgres(ql)?|pg|mysql|amqp|rabbitmq|broker|cache)_?(url|uri)`, // DATABASE_URL
}

// Redactor decides which environment variables are redacted.
type Redactor struct {
	names []*regexp.Regexp
}

// NewRedactor returns a Redactor for DefaultRedactEnv plus extra.
func NewRedactor(extra []*regexp.Regexp) *Redactor {
	r := &Redactor{}
	for _, p := range DefaultRedactEnv {
		r.names = append(r.names, regexp.MustCompile(`(?i)`+p))
	}
	r.names = append(r.names, extra...)
	return r
}

// userinfoPassword finds a URL carrying a password (scheme://user:password@host), whatever the variable's name.
var userinfoPassword = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@`)

// Match reports whether the variable name (or, for a credential-bearing URL, its value) calls for redaction.
func (r *Redactor) Match(name, value string) bool {
	for _, re := range r.names {
		if re.MatchString(name) {
			return true
		}
	}
	return userinfoPassword.MatchString(value)
}

// RedactedValue replaces a redacted variable's value.
const RedactedValue = "<redacted>"

// RedactEnviron redacts a NUL-separated environ block (/proc/PID/environ). It returns the block to store and the
// names redacted, in order; the block is returned unchanged (same slice) when nothing matched.
func (r *Redactor) RedactEnviron(block []byte) ([]byte, []string) {
	var names []string
	parts := bytes.Split(block, []byte{0})
	for i, kv := range parts {
		name, value, ok := strings.Cut(string(kv), "=")
		if !ok || !r.Match(name, value) {
			continue
		}
		names = append(names, name)
		parts[i] = []byte(name + "=" + RedactedValue)
	}
	if names == nil {
		return block, nil
	}
	return bytes.Join(parts, []byte{0}), names
}
