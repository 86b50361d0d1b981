// Package client builds what a platform needs to reach a cluster's Kubernetes API through a warren gateway: a
// client-go rest.Config for the gateway's /clusters/<cluster>/ path with a caller token (static, a file re-read at
// every request, or a command run whenever a fresh token is needed) and the gateway's CA or SPKI pins, or the
// kubeconfig that kubectl uses for the same. `warren kubeconfig`, `warren acquire` and the tests build their clients
// here, so that all of them reach the gateway the same way.
package client

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/transport"
)

// Config says how to reach one cluster: either through a kubeconfig (Kubeconfig and Context, as kubectl), or through
// a gateway (Gateway, Cluster, one token source, and the gateway's CA or pins). The field names follow the flags of
// `warren kubeconfig` and `warren acquire`, which is how the errors of Validate name them.
type Config struct {
	// Kubeconfig is the path of a kubeconfig file; Context picks one of its contexts (default: its current one).
	// Exclusive with Gateway.
	Kubeconfig string
	Context    string

	// Gateway is the gateway's base URL, https://HOST[:PORT][/prefix].
	Gateway string
	// Cluster is the name of the cluster behind the gateway.
	Cluster string
	// Token is a caller token (static: requests fail once it expires).
	Token string
	// TokenFile holds a caller token; it is re-read for every request, so a rotated file is picked up.
	TokenFile string
	// TokenCommand is a shell command (/bin/sh -c) printing a caller token. It is run again shortly before the token
	// it printed expires (the token's exp claim), and after a 401.
	TokenCommand string
	// CAFile is the PEM CA certificate(s) of the gateway; default: the system roots.
	CAFile string
	// Pins are SPKI pins (sha256:BASE64) of the gateway's certificate or of an intermediate, as the connector's
	// --pin. With CAFile, the chain must verify against the CA and contain a pinned certificate; alone, the pinned
	// certificate is the trust anchor (the chain up to it must verify).
	Pins []string

	// UserAgent is sent with every request; default client-go's.
	UserAgent string
}

// TokenCommandTimeout bounds one run of a TokenCommand.
const TokenCommandTimeout = time.Minute

// tokenRefreshBefore is how long before its expiry a token from TokenCommand is replaced by a fresh one, so that a
// request never leaves with a token about to expire.
const tokenRefreshBefore = 30 * time.Second

// Validate checks that the configuration names one way to reach one cluster.
func (c Config) Validate() error {
	if c.Kubeconfig != "" {
		if c.Gateway != "" || c.Cluster != "" || c.Token != "" || c.TokenFile != "" || c.TokenCommand != "" || c.CAFile != "" || len(c.Pins) > 0 {
			return errors.New("give either --kubeconfig (with --context) or --gateway, --cluster and a token, not both")
		}
		return nil
	}
	if c.Context != "" {
		return errors.New("--context needs --kubeconfig")
	}
	switch {
	case c.Gateway == "":
		return errors.New("missing --gateway: the gateway's URL, e.g. --gateway https://gateway.example.com (or give --kubeconfig)")
	case c.Cluster == "":
		return errors.New("missing --cluster: the name of the cluster to reach")
	}
	if _, err := c.ServerURL(); err != nil {
		return err
	}
	n := 0
	for _, s := range []string{c.Token, c.TokenFile, c.TokenCommand} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("give exactly one of --token (a caller token), --token-file (a file holding one) and --token-command (a command printing one)")
	}
	if _, err := ParsePins(c.Pins); err != nil {
		return fmt.Errorf("--pin: %w", err)
	}
	return nil
}

// ServerURL is the cluster's API through the gateway: <Gateway>/clusters/<Cluster>.
func (c Config) ServerURL() (string, error) {
	u, err := url.Parse(c.Gateway)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("--gateway %q is not of the form https://HOST[:PORT]", c.Gateway)
	}
	if strings.ContainsAny(c.Cluster, "/?#%") || c.Cluster == "" {
		return "", fmt.Errorf("--cluster %q is not a cluster name", c.Cluster)
	}
	return strings.TrimSuffix(c.Gateway, "/") + "/clusters/" + c.Cluster, nil
}

// RESTConfig returns a client-go config for the cluster. With Pins it first connects to the gateway once to check
// its chain against the pins (ctx bounds that), and trusts the pinned certificate from then on.
func (c Config) RESTConfig(ctx context.Context) (*rest.Config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Kubeconfig != "" {
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: c.Kubeconfig}
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: c.Context}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", c.Kubeconfig, err)
		}
		if c.UserAgent != "" {
			cfg.UserAgent = c.UserAgent
		}
		return cfg, nil
	}
	server, _ := c.ServerURL()
	cfg := &rest.Config{Host: server, UserAgent: c.UserAgent}
	if c.CAFile != "" {
		ca, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read --ca-file: %v", err)
		}
		cfg.TLSClientConfig.CAData = ca
	}
	if len(c.Pins) > 0 {
		anchor, err := pinnedAnchor(ctx, c.Gateway, cfg.TLSClientConfig.CAData, c.Pins)
		if err != nil {
			return nil, err
		}
		cfg.TLSClientConfig.CAData = anchor
	}
	switch {
	case c.Token != "":
		cfg.BearerToken = c.Token
	case c.TokenFile != "":
		if _, err := os.Stat(c.TokenFile); err != nil {
			return nil, fmt.Errorf("cannot read --token-file: %v", err)
		}
		cfg.BearerTokenFile = c.TokenFile
	default:
		cfg.WrapTransport = transport.ResettableTokenSourceWrapTransport(NewTokenCommandSource(c.TokenCommand))
	}
	return cfg, nil
}

// KubeconfigFor returns a kubeconfig for kubectl that reaches the cluster through the gateway. With TokenCommand its
// user is an exec credential plugin: kubectl runs `<warren> credential --token-command CMD`, warren being the path
// of the warren binary. Pins cannot be written into a kubeconfig.
func (c Config) KubeconfigFor(warren string) (*clientcmdapi.Config, error) {
	if c.Kubeconfig != "" {
		return nil, errors.New("a kubeconfig is written from --gateway, --cluster and a token, not from another kubeconfig")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if len(c.Pins) > 0 {
		return nil, errors.New("a kubeconfig cannot hold pins (kubectl verifies against a CA only): give the gateway's CA with --ca-file")
	}
	server, _ := c.ServerURL()
	cl := clientcmdapi.NewCluster()
	cl.Server = server
	if c.CAFile != "" {
		ca, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read --ca-file: %v", err)
		}
		cl.CertificateAuthorityData = ca
	}
	user := clientcmdapi.NewAuthInfo()
	switch {
	case c.Token != "":
		user.Token = c.Token
	case c.TokenFile != "":
		user.TokenFile = c.TokenFile
	default:
		if warren == "" {
			return nil, errors.New("the path of the warren binary is needed for the credential plugin")
		}
		user.Exec = &clientcmdapi.ExecConfig{
			APIVersion:      "client.authentication.k8s.io/v1",
			Command:         warren,
			Args:            []string{"credential", "--token-command", c.TokenCommand},
			InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
		}
	}
	name := "warren-" + c.Cluster
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = cl
	cfg.AuthInfos[name] = user
	kctx := clientcmdapi.NewContext()
	kctx.Cluster, kctx.AuthInfo = name, name
	cfg.Contexts[name] = kctx
	cfg.CurrentContext = name
	return cfg, nil
}

// KubeconfigYAML is KubeconfigFor, written as a kubeconfig file (YAML) for kubectl.
func (c Config) KubeconfigYAML(warren string) ([]byte, error) {
	cfg, err := c.KubeconfigFor(warren)
	if err != nil {
		return nil, err
	}
	return clientcmd.Write(*cfg)
}

// TokenCommandSource runs a command (with /bin/sh -c) whenever it needs a token: at the first request,
// tokenRefreshBefore ahead of the last token's expiry, and after a 401 (client-go's token transport resets it). It
// is safe for concurrent use; one command runs at a time.
type TokenCommandSource struct {
	command string
	now     func() time.Time

	mu        sync.Mutex // held while the command runs, so that concurrent requests wait for one token
	token     *oauth2.Token
	fetchedAt time.Time
}

// NewTokenCommandSource returns a TokenCommandSource for command.
func NewTokenCommandSource(command string) *TokenCommandSource {
	return &TokenCommandSource{command: command, now: time.Now}
}

// Token implements oauth2.TokenSource.
func (s *TokenCommandSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.token != nil && (s.token.Expiry.IsZero() || now.Add(tokenRefreshBefore).Before(s.token.Expiry)) {
		return s.token, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), TokenCommandTimeout)
	defer cancel()
	tok, err := RunTokenCommand(ctx, s.command)
	if err != nil {
		return nil, err
	}
	t := &oauth2.Token{AccessToken: tok, TokenType: "Bearer"}
	if info, err := ParseToken(tok); err == nil {
		t.Expiry = info.Expiry
	}
	s.token, s.fetchedAt = t, now
	return t, nil
}

// ResetTokenOlderThan drops the cached token if it was fetched before t: the gateway refused it.
func (s *TokenCommandSource) ResetTokenOlderThan(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fetchedAt.Before(t) {
		s.token = nil
	}
}
