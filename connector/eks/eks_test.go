package eks

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"

	"github.com/warren-dev/warren/internal/testenv/awsfake"
)

func awsConfig(fake *awsfake.Server, id awsfake.Identity) aws.Config {
	return aws.Config{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(fake.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(id.AccessKeyID, id.SecretAccessKey, ""),
	}
}

// apiServer is a TLS server standing in for an EKS API server: it accepts the tokens the fake STS verifies for
// cluster, and records them.
type apiServer struct {
	*httptest.Server
	mu     sync.Mutex
	tokens []string
}

func startAPIServer(t *testing.T, fake **awsfake.Server, cluster string) *apiServer {
	a := &apiServer{}
	a.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		a.mu.Lock()
		a.tokens = append(a.tokens, tok)
		a.mu.Unlock()
		id, err := (*fake).VerifyEKSToken(tok, cluster)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, `{"user":%q}`, id.ARN)
	}))
	t.Cleanup(a.Close)
	return a
}

func TestRestConfig(t *testing.T) {
	var fake *awsfake.Server
	api := startAPIServer(t, &fake, "prod")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	fake, err := awsfake.New(awsfake.Config{Clusters: []awsfake.Cluster{{Name: "prod", Endpoint: api.URL, CAPEM: caPEM}}})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()

	cfg, err := RestConfig(context.Background(), Config{Cluster: "prod", AWS: awsConfig(fake, awsfake.TestIdentity)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != api.URL || cfg.BearerToken != "" {
		t.Fatalf("config %+v", cfg)
	}
	client, err := rest.HTTPClientFor(cfg) // verifies the API server against the CA from DescribeCluster
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(api.URL + "/version")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), awsfake.TestIdentity.ARN) {
		t.Fatalf("%s %s", resp.Status, body)
	}

	// The token is the aws-iam-authenticator form.
	tok := api.tokens[0]
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, TokenPrefix))
	if !strings.HasPrefix(tok, TokenPrefix) || err != nil || strings.HasSuffix(tok, "=") {
		t.Fatalf("token %q: %v", tok, err)
	}
	u, _ := url.Parse(string(raw))
	q := u.Query()
	if q.Get("Action") != "GetCallerIdentity" || q.Get("X-Amz-Expires") != "60" || q.Get("X-Amz-SignedHeaders") != "host;x-k8s-aws-id" {
		t.Fatalf("presigned URL %s", raw)
	}
}

func TestRestConfigErrors(t *testing.T) {
	fake, err := awsfake.New(awsfake.Config{Clusters: []awsfake.Cluster{{Name: "prod", Endpoint: "https://127.0.0.1:1", CAPEM: []byte("x")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	wrong := awsfake.TestIdentity
	wrong.SecretAccessKey = "wrong"
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown cluster", Config{Cluster: "nope", AWS: awsConfig(fake, awsfake.TestIdentity)}, `failed to describe cluster "nope" in us-east-1`},
		{"bad secret", Config{Cluster: "prod", AWS: awsConfig(fake, wrong)}, "SignatureDoesNotMatch"},
		{"no region", Config{Cluster: "prod"}, "no AWS region"},
		{"no cluster", Config{AWS: awsConfig(fake, awsfake.TestIdentity)}, "cluster name is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := RestConfig(context.Background(), c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
}

// countingGenerator makes tokens tok-1, tok-2, ...; fail makes it fail.
type countingGenerator struct {
	mu   sync.Mutex
	n    int
	fail bool
}

func (g *countingGenerator) Token(context.Context, string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail {
		return "", fmt.Errorf("no credentials")
	}
	g.n++
	return fmt.Sprintf("tok-%d", g.n), nil
}

func TestTokenRenewal(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	gen := &countingGenerator{}
	ts := &TokenSource{gen: gen, cluster: "prod", now: func() time.Time { return now }}
	token := func() string {
		t.Helper()
		tok, err := ts.Token()
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	steps := []struct {
		advance time.Duration
		fail    bool
		want    string
	}{
		{0, false, "tok-1"},
		{13*time.Minute + 59*time.Second, false, "tok-1"}, // cached while younger than 14 minutes
		{time.Second, false, "tok-2"},                     // renewed at 14
		{14 * time.Minute, true, "tok-2"},                 // renewal fails: the old token is still good for a minute
		{59 * time.Second, true, "tok-2"},
		{time.Second, false, "tok-3"},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		gen.fail = s.fail
		if got := token(); got != s.want {
			t.Fatalf("step %d: %s, want %s", i, got, s.want)
		}
	}
	// Past the token's lifetime a failed renewal is an error.
	now = now.Add(15 * time.Minute)
	gen.fail = true
	if _, err := ts.Token(); err == nil {
		t.Fatal("expired token returned")
	}
}

// A 401 from the API server drops the cached token: the next request carries a new one.
func TestRenewalOn401(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		seen = append(seen, tok)
		if tok == "tok-1" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	ts := &TokenSource{gen: &countingGenerator{}, cluster: "prod", now: time.Now}
	if _, err := ts.Token(); err != nil { // as RestConfig does at start
		t.Fatal(err)
	}
	client := &http.Client{Transport: transport.ResettableTokenSourceWrapTransport(ts)(http.DefaultTransport)}
	codes := []int{}
	for range 2 {
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if fmt.Sprint(codes) != "[401 200]" || fmt.Sprint(seen) != "[tok-1 tok-2]" {
		t.Fatalf("codes %v tokens %v", codes, seen)
	}
}
