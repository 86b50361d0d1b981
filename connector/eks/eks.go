// Package eks reaches the Kubernetes API of an EKS cluster from outside it: the API server's endpoint and CA come
// from EKS DescribeCluster, and bearer tokens from STS, in the scheme aws-iam-authenticator and `aws eks get-token`
// use: "k8s-aws-v1." and the base64url (no padding) of a presigned GetCallerIdentity URL that signs the header
// x-k8s-aws-id: CLUSTER. EKS accepts such a token for 15 minutes; tokens here are renewed after 14, and at once
// when the API server answers 401.
//
// AWS credentials come from the standard chain (environment, shared config and credentials files, SSO, web
// identity, ECS and EC2 instance roles); the identity must be granted access to the cluster (an EKS access entry,
// or the aws-auth ConfigMap).
package eks

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awseks "github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"golang.org/x/oauth2"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
)

const (
	// TokenPrefix starts every EKS bearer token.
	TokenPrefix = "k8s-aws-v1."
	// ClusterIDHeader binds a token to one cluster: it is signed into the presigned URL.
	ClusterIDHeader = "x-k8s-aws-id"
	// TokenLifetime is how long EKS accepts a token after it was signed.
	TokenLifetime = 15 * time.Minute
	// RefreshAfter is when a token is replaced: a minute before EKS would refuse it.
	RefreshAfter = 14 * time.Minute
	// presignExpires is the X-Amz-Expires of the presigned URL, as aws-iam-authenticator sets it; STS keeps
	// GetCallerIdentity URLs valid for TokenLifetime regardless.
	presignExpires = "60"
)

// Config says which cluster to reach and how to reach AWS.
type Config struct {
	// Cluster is the EKS cluster's name. Required.
	Cluster string
	// AWS is the SDK configuration: credentials, region, and BaseEndpoint for a non-default endpoint (a VPC
	// endpoint, or a stand-in in tests). Build it with config.LoadDefaultConfig (warren's commands: with
	// internal/awsconfig). Its Region is required.
	AWS aws.Config
	// Now is the clock for token renewal. Default time.Now.
	Now func() time.Time
}

// RestConfig describes the cluster with EKS DescribeCluster and returns a client-go config for its API server that
// authenticates with renewed STS tokens. It fails when the cluster is unknown or not ACTIVE, or when no token can
// be made now (so that bad credentials show at start, not at the first request).
func RestConfig(ctx context.Context, cfg Config) (*rest.Config, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("eks: the cluster name is required")
	}
	if cfg.AWS.Region == "" {
		return nil, errors.New("eks: no AWS region: pass --region or set AWS_REGION")
	}
	out, err := awseks.NewFromConfig(cfg.AWS).DescribeCluster(ctx, &awseks.DescribeClusterInput{Name: aws.String(cfg.Cluster)})
	if err != nil {
		return nil, fmt.Errorf("eks: failed to describe cluster %q in %s: %w", cfg.Cluster, cfg.AWS.Region, err)
	}
	c := out.Cluster
	if c == nil || aws.ToString(c.Endpoint) == "" {
		status := "unknown"
		if c != nil {
			status = string(c.Status)
		}
		return nil, fmt.Errorf("eks: cluster %q has no endpoint yet (status %s): wait until it is ACTIVE", cfg.Cluster, status)
	}
	if c.Status != "" && c.Status != "ACTIVE" && c.Status != "UPDATING" {
		return nil, fmt.Errorf("eks: cluster %q is %s, not ACTIVE", cfg.Cluster, c.Status)
	}
	if c.CertificateAuthority == nil || aws.ToString(c.CertificateAuthority.Data) == "" {
		return nil, fmt.Errorf("eks: cluster %q reports no certificate authority", cfg.Cluster)
	}
	ca, err := base64.StdEncoding.DecodeString(aws.ToString(c.CertificateAuthority.Data))
	if err != nil {
		return nil, fmt.Errorf("eks: cluster %q: certificate authority data is not base64: %w", cfg.Cluster, err)
	}
	ts := NewTokenSource(NewGenerator(cfg.AWS), cfg.Cluster, cfg.Now)
	if _, err := ts.Token(); err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            aws.ToString(c.Endpoint),
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		// client-go resets the cached token when the API server answers 401, so the next request signs anew.
		WrapTransport: transport.ResettableTokenSourceWrapTransport(ts),
		UserAgent:     rest.DefaultKubernetesUserAgent(),
	}, nil
}

// Generator makes EKS tokens by presigning STS GetCallerIdentity.
type Generator struct {
	presign *sts.PresignClient
}

// NewGenerator returns a Generator using cfg's credentials, region and endpoint.
func NewGenerator(cfg aws.Config) *Generator {
	return &Generator{presign: sts.NewPresignClient(sts.NewFromConfig(cfg))}
}

// Token returns a token for cluster, signed now.
func (g *Generator) Token(ctx context.Context, cluster string) (string, error) {
	req, err := g.presign.PresignGetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}, func(o *sts.PresignOptions) {
		o.ClientOptions = append(o.ClientOptions, func(o *sts.Options) {
			o.APIOptions = append(o.APIOptions,
				smithyhttp.SetHeaderValue(ClusterIDHeader, cluster),
				// An X-Amz-* header is hoisted into the query by the presigner.
				smithyhttp.SetHeaderValue("X-Amz-Expires", presignExpires))
		})
	})
	if err != nil {
		return "", fmt.Errorf("eks: failed to sign an STS GetCallerIdentity request for a token "+
			"(check the AWS credentials: environment, ~/.aws, or the instance role): %w", err)
	}
	if u, err := url.Parse(req.URL); err != nil || !strings.Contains(u.Query().Get("X-Amz-SignedHeaders"), ClusterIDHeader) {
		return "", fmt.Errorf("eks: the presigned URL does not sign %s", ClusterIDHeader)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(req.URL)), nil
}

// tokenGenerator is what a TokenSource needs of a Generator.
type tokenGenerator interface {
	Token(ctx context.Context, cluster string) (string, error)
}

// TokenSource caches a token and renews it RefreshAfter after it was made, or when reset (after a 401). It
// implements client-go's transport.ResettableTokenSource and is safe for concurrent use.
type TokenSource struct {
	gen     tokenGenerator
	cluster string
	now     func() time.Time

	mu      sync.Mutex
	tok     *oauth2.Token // Owned by mu
	created time.Time
}

var _ transport.ResettableTokenSource = (*TokenSource)(nil)

// NewTokenSource returns a TokenSource for cluster; now may be nil for time.Now.
func NewTokenSource(gen *Generator, cluster string, now func() time.Time) *TokenSource {
	if now == nil {
		now = time.Now
	}
	return &TokenSource{gen: gen, cluster: cluster, now: now}
}

// tokenTimeout bounds the signing of a token (which may fetch credentials, e.g. from the instance metadata service).
const tokenTimeout = 30 * time.Second

// Token returns the cached token while it is younger than RefreshAfter, else a new one. If renewal fails while the
// old token is still accepted by EKS, the old one is returned: a passing credentials hiccup costs nothing.
func (ts *TokenSource) Token() (*oauth2.Token, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := ts.now()
	if ts.tok != nil && now.Before(ts.created.Add(RefreshAfter)) {
		return ts.tok, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), tokenTimeout)
	defer cancel()
	s, err := ts.gen.Token(ctx, ts.cluster)
	if err != nil {
		if ts.tok != nil && now.Before(ts.created.Add(TokenLifetime)) {
			return ts.tok, nil
		}
		return nil, err
	}
	ts.tok = &oauth2.Token{AccessToken: s, TokenType: "Bearer", Expiry: now.Add(TokenLifetime)}
	ts.created = now
	return ts.tok, nil
}

// ResetTokenOlderThan drops the cached token if it was made before t (client-go calls it after a 401).
func (ts *TokenSource) ResetTokenOlderThan(t time.Time) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.created.Before(t) {
		ts.tok = nil
	}
}
