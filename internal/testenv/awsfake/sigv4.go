package awsfake

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AWS Signature Version 4, checked the way AWS checks it, written independently of the SDK's signer so that the
// tests exercise the SDK rather than agree with it by construction.
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html

const (
	sigAlgorithm     = "AWS4-HMAC-SHA256"
	amzDateFormat    = "20060102T150405Z"
	unsignedPayload  = "UNSIGNED-PAYLOAD"
	maxClockSkew     = 15 * time.Minute
	emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// sigError is a failed signature check: code is AWS's error code (SignatureDoesNotMatch, ...).
type sigError struct {
	code, msg string
}

func (e *sigError) Error() string { return e.code + ": " + e.msg }

// signature is what a request's SigV4 authorization says, header or query (presigned) form.
type signature struct {
	accessKey     string
	date          string // yyyymmdd of the scope
	region        string
	service       string
	signedHeaders []string // lower case, sorted as sent
	sig           string   // hex
	amzDate       time.Time
	presigned     bool
	expires       time.Duration // presigned only
	securityToken string
}

// parseSignature reads a request's SigV4 authorization. ok is false when the request carries none.
func parseSignature(r *http.Request) (s signature, ok bool, err error) {
	q := r.URL.Query()
	if auth := r.Header.Get("Authorization"); auth != "" {
		rest, found := strings.CutPrefix(auth, sigAlgorithm+" ")
		if !found {
			return s, true, &sigError{"IncompleteSignature", "Authorization header does not start with " + sigAlgorithm}
		}
		fields := map[string]string{}
		for _, part := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			fields[k] = v
		}
		if err := s.setCredential(fields["Credential"]); err != nil {
			return s, true, err
		}
		s.signedHeaders = strings.Split(fields["SignedHeaders"], ";")
		s.sig = fields["Signature"]
		amz := r.Header.Get("X-Amz-Date")
		if s.amzDate, err = time.Parse(amzDateFormat, amz); err != nil {
			return s, true, &sigError{"IncompleteSignature", "missing or malformed X-Amz-Date header"}
		}
		s.securityToken = r.Header.Get("X-Amz-Security-Token")
		return s, true, nil
	}
	if q.Get("X-Amz-Algorithm") == "" {
		return s, false, nil
	}
	if q.Get("X-Amz-Algorithm") != sigAlgorithm {
		return s, true, &sigError{"IncompleteSignature", "X-Amz-Algorithm must be " + sigAlgorithm}
	}
	s.presigned = true
	if err := s.setCredential(q.Get("X-Amz-Credential")); err != nil {
		return s, true, err
	}
	s.signedHeaders = strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	s.sig = q.Get("X-Amz-Signature")
	if s.amzDate, err = time.Parse(amzDateFormat, q.Get("X-Amz-Date")); err != nil {
		return s, true, &sigError{"IncompleteSignature", "missing or malformed X-Amz-Date"}
	}
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || secs <= 0 || secs > 7*24*3600 {
		return s, true, &sigError{"AuthorizationQueryParametersError", "X-Amz-Expires must be a number of seconds between 1 and 604800"}
	}
	s.expires = time.Duration(secs) * time.Second
	s.securityToken = q.Get("X-Amz-Security-Token")
	return s, true, nil
}

func (s *signature) setCredential(cred string) error {
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" {
		return &sigError{"IncompleteSignature", fmt.Sprintf("malformed credential scope %q", cred)}
	}
	s.accessKey, s.date, s.region, s.service = parts[0], parts[1], parts[2], parts[3]
	return nil
}

// verify checks s against the request with the secret key. headers gives the values of signed headers (lower-case
// names) and payloadHashes the hashes of the body to try (presigned URLs are signed either with the hash of an empty
// body or UNSIGNED-PAYLOAD).
func (s *signature) verify(method string, u *url.URL, headers func(string) (string, bool), payloadHashes []string, secret string) error {
	if s.amzDate.Format("20060102") != s.date {
		return &sigError{"SignatureDoesNotMatch", "the credential scope date does not match X-Amz-Date"}
	}
	signed := map[string]bool{}
	var canonHeaders strings.Builder
	for _, h := range s.signedHeaders {
		v, ok := headers(h)
		if !ok {
			return &sigError{"SignatureDoesNotMatch", fmt.Sprintf("signed header %q is missing from the request", h)}
		}
		signed[h] = true
		canonHeaders.WriteString(h + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	if !signed["host"] {
		return &sigError{"SignatureDoesNotMatch", "the host header must be signed"}
	}
	key := signingKey(secret, s.date, s.region, s.service)
	for _, ph := range payloadHashes {
		creq := method + "\n" + canonicalURI(u) + "\n" + canonicalQuery(u.Query(), s.presigned) + "\n" +
			canonHeaders.String() + "\n" + strings.Join(s.signedHeaders, ";") + "\n" + ph
		sum := sha256.Sum256([]byte(creq))
		toSign := sigAlgorithm + "\n" + s.amzDate.Format(amzDateFormat) + "\n" +
			s.date + "/" + s.region + "/" + s.service + "/aws4_request\n" + hex.EncodeToString(sum[:])
		want := hex.EncodeToString(hmacSHA256(key, toSign))
		if hmac.Equal([]byte(want), []byte(s.sig)) {
			return nil
		}
	}
	return &sigError{"SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."}
}

func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// canonicalURI is the path, each segment URI-encoded (again, for services other than S3).
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = uriEncode(s)
	}
	return strings.Join(segs, "/")
}

// canonicalQuery sorts the parameters by name (then value), each URI-encoded; a presigned URL's own signature is
// left out.
func canonicalQuery(q url.Values, presigned bool) string {
	type kv struct{ k, v string }
	var pairs []kv
	for k, vs := range q {
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, kv{uriEncode(k), uriEncode(v)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.k + "=" + p.v
	}
	return strings.Join(parts, "&")
}

// uriEncode encodes every byte but the unreserved characters A-Z a-z 0-9 - _ . ~, with upper-case hex.
func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// requestHeaders returns the signed-header lookup of a server-side request: Go keeps Host and Content-Length out of
// r.Header.
func requestHeaders(r *http.Request) func(string) (string, bool) {
	return func(name string) (string, bool) {
		switch name {
		case "host":
			return r.Host, r.Host != ""
		case "content-length":
			if v := r.Header.Get("Content-Length"); v != "" {
				return v, true
			}
			return strconv.FormatInt(r.ContentLength, 10), r.ContentLength >= 0
		}
		vs, ok := r.Header[http.CanonicalHeaderKey(name)]
		if !ok {
			return "", false
		}
		return strings.Join(vs, ","), true
	}
}

// authenticate checks a request's signature: a known access key, a matching signature, a date within the allowed
// skew (header form) or validity (presigned form), the expected service. It returns the caller's identity.
func (s *Server) authenticate(r *http.Request, body []byte, service string) (*Identity, *signature, error) {
	sig, ok, err := parseSignature(r)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, &sigError{"MissingAuthenticationToken", "Request is missing Authentication Token"}
	}
	id, err := s.checkSignature(&sig, r.Method, r.URL, requestHeaders(r), body)
	if err != nil {
		return nil, nil, err
	}
	if sig.service != service {
		return nil, nil, &sigError{"SignatureDoesNotMatch", fmt.Sprintf("credential scope names service %q, this is %q", sig.service, service)}
	}
	return id, &sig, nil
}

// checkSignature verifies sig for a request (method, URL, signed headers, body: nil for presigned URLs).
func (s *Server) checkSignature(sig *signature, method string, u *url.URL, headers func(string) (string, bool), body []byte) (*Identity, error) {
	id := s.identity(sig.accessKey)
	if id == nil {
		return nil, &sigError{"InvalidClientTokenId", "The security token included in the request is invalid."}
	}
	if id.SessionToken != sig.securityToken {
		return nil, &sigError{"InvalidClientTokenId", "The security token included in the request is invalid."}
	}
	var hashes []string
	if sig.presigned {
		hashes = []string{emptyPayloadHash, unsignedPayload}
	} else if h, ok := headers("x-amz-content-sha256"); ok {
		hashes = []string{h}
	} else {
		sum := sha256.Sum256(body)
		hashes = []string{hex.EncodeToString(sum[:])}
	}
	if err := sig.verify(method, u, headers, hashes, id.SecretAccessKey); err != nil {
		return nil, err
	}
	now := s.now()
	if sig.presigned {
		// Presigned GetCallerIdentity URLs (EKS tokens) last 15 minutes, as STS honours them, whatever their
		// X-Amz-Expires (aws-iam-authenticator signs with 60 s and relies on that); other presigned URLs last
		// X-Amz-Expires.
		valid := sig.expires
		if sig.service == "sts" {
			valid = presignedSTSValidity
		}
		if now.Before(sig.amzDate.Add(-maxClockSkew)) || now.After(sig.amzDate.Add(valid)) {
			return nil, &sigError{"ExpiredToken", fmt.Sprintf("the presigned URL was signed at %s and is valid for %s", sig.amzDate.Format(time.RFC3339), valid)}
		}
	} else if d := now.Sub(sig.amzDate); d > maxClockSkew || d < -maxClockSkew {
		return nil, &sigError{"RequestTimeTooSkewed", "The difference between the request time and the current time is too large."}
	}
	return id, nil
}

// presignedSTSValidity is how long a presigned GetCallerIdentity URL is accepted after its X-Amz-Date.
const presignedSTSValidity = 15 * time.Minute
