package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/warren-dev/warren/connector"
)

const connectorUsage = `usage: warren connector --gateway https://HOST:PORT --token-file F --gateway-keys PUB[,PUB] [--state-dir DIR] [--ca-file F] [--kubeconfig F]

Dials out to the gateway and serves the Kubernetes API of this cluster through the tunnel, with the connector's
own credentials: the pod's service account by default, or --kubeconfig. It accepts no inbound connection (the
optional --health-listen serves probes only). Its identity at the gateway is a key of its own (kept in --state-dir):
it exchanges the join token of --token-file for short-lived credentials bound to that key, and renews them. Every
request must carry the gateway's assertion of it, signed by a key of --gateway-keys; the caller's rules in it are
checked again, under --policy.

`

// ConnectorOptions are the flags of `warren connector`; Validate turns them into connector.ServeConfig.
type ConnectorOptions struct {
	serve                                  connector.ServeConfig // flags bound to its fields where the types match
	pins, gatewayKeys, stripHeaders, proxy string                // comma-separated, or to parse
	audit                                  auditOptions
	tunnel                                 tunnelOptions
	log                                    logOptions
}

// NewConnectorOptions returns the options with the libraries' defaults.
func NewConnectorOptions() *ConnectorOptions {
	return &ConnectorOptions{serve: connector.DefaultServeConfig()}
}

// AddFlags binds the options to fs.
func (o *ConnectorOptions) AddFlags(fs *flag.FlagSet) {
	s, c := &o.serve, &o.serve.Connector
	fs.StringVar(&c.GatewayURL, "gateway", "", "the gateway's URL, https://HOST:PORT")
	fs.StringVar(&s.TokenFile, "token-file", "", "file holding the connector's join token (warren token connector); re-read at every join and credential renewal, so a rotated token needs no restart")
	fs.StringVar(&s.StateDir, "state-dir", "", "directory keeping the connector's key (connector.key), so that a restarted connector keeps its identity at the gateway; default: a new key, and identity, per start")
	fs.StringVar(&s.CAFile, "ca-file", "", "CA certificate(s) (PEM) that signed the gateway's certificate; default: system roots")
	fs.StringVar(&o.pins, "pin", "", "SPKI pins of the gateway's certificate or an intermediate, sha256:BASE64, comma-separated (several for rotation); alone, a pin replaces CA verification")
	fs.StringVar(&o.proxy, "proxy", "", "HTTP CONNECT proxy to reach the gateway, http://[user:password@]HOST:PORT; default: HTTPS_PROXY/NO_PROXY")
	o.tunnel.addFlags(fs)
	fs.StringVar(&s.EKSCluster, "eks-cluster", "", "reach this EKS cluster from outside it: endpoint and CA from EKS DescribeCluster, tokens from STS (AWS credentials from the standard chain)")
	fs.StringVar(&s.Region, "region", "", "AWS region of --eks-cluster")
	fs.StringVar(&s.EndpointURL, "endpoint-url", "", "AWS endpoint URL override for EKS and STS (tests, VPC endpoints)")
	fs.StringVar(&s.Kubeconfig, "kubeconfig", "", "kubeconfig for the API server; default: in-cluster service account")
	fs.StringVar(&o.gatewayKeys, "gateway-keys", "", "the gateway's public keys (signing.pub of its --gateway-key; several during a rotation), comma-separated PEM or JWKS files, re-read when they change and on SIGHUP: every request must carry the gateway's assertion of it signed by one of them")
	fs.StringVar(&s.RevokedFile, "revoked-tokens", "", "file of caller token ids (jti), one per line, whose requests this connector refuses; "+revokedHelp)
	fs.BoolVar(&c.DisconnectExpiredTokens, "disconnect-expired-tokens", c.DisconnectExpiredTokens, disconnectExpiredHelp)
	for _, name := range []string{"issuer-keys", "issuer-jwks-url", "algorithms", "max-token-lifetime"} {
		fs.Var(removedFlag("--"+name+" was removed: the connector no longer sees caller tokens (the gateway keeps them); it verifies the gateway's assertion of each request with --gateway-keys, the gateway's public key(s)"),
			name, "removed; see --gateway-keys")
	}
	fs.StringVar(&s.PolicyFile, "policy", "", "the cluster's ceiling: a YAML file of rules; requests outside it are refused whatever the token says")
	fs.BoolVar(&c.Impersonate, "impersonate", c.Impersonate, "reach the API server as the caller (Impersonate-User warren:<sub>, the caller's groups), as the gateway's assertion names them")
	fs.StringVar(&o.stripHeaders, "strip-headers", "", "more request headers that never reach the API server, comma-separated, a trailing * for a prefix (X-Remote-*, X-Forwarded-*, X-Real-Ip and Forwarded always are): the cluster's --requestheader-*-headers names when they are not X-Remote-*")
	o.audit.addFlags(fs, "", "audit log of the requests the connector serves or refuses: hash-chained JSON lines (- for standard output); default: none")
	fs.StringVar(&c.Name, "name", "", "this connector's name in the gateway's logs; default: host name")
	fs.StringVar(&s.HealthListen, "health-listen", "", "address for /healthz and /readyz probes (e.g. :8080); default: none")
	o.log.addFlags(fs)
}

// Validate checks the flags together and returns what connector.Serve runs. It reads no key, token or
// certificate: Serve does, and says which flag was at fault.
func (o *ConnectorOptions) Validate() (connector.ServeConfig, error) {
	cfg := o.serve
	log, err := o.log.logger()
	if err != nil {
		return cfg, err
	}
	switch {
	case cfg.Connector.GatewayURL == "":
		return cfg, errors.New("missing --gateway: the gateway's URL, e.g. --gateway https://gateway.example.com:443")
	case cfg.TokenFile == "":
		return cfg, errors.New("missing --token-file: the file holding this connector's token (made by warren token connector)")
	case o.gatewayKeys == "":
		return cfg, errors.New("missing --gateway-keys: the gateway's public key(s) (signing.pub of the key given to warren gateway --gateway-key): the connector serves only requests the gateway signed an assertion of")
	case cfg.EKSCluster != "" && cfg.Kubeconfig != "":
		return cfg, errors.New("give --eks-cluster or --kubeconfig, not both")
	}
	if o.proxy != "" {
		u, err := url.Parse(o.proxy)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return cfg, fmt.Errorf("--proxy %q: want http://[user:password@]HOST:PORT", o.proxy)
		}
		cfg.Connector.Proxy = http.ProxyURL(u)
	}
	if err := o.audit.validate(); err != nil {
		return cfg, err
	}
	cfg.Pins = splitList(o.pins)
	cfg.GatewayKeyFiles = splitList(o.gatewayKeys)
	cfg.AuditLog, cfg.AuditSigningKeyFile = o.audit.path, o.audit.signingKey
	c := &cfg.Connector
	c.StripHeaders = splitList(o.stripHeaders)
	c.Tunnel = o.tunnel.config()
	c.Version = version
	c.Logger = log
	return cfg, nil
}

// runConnector implements `warren connector`: connector.Serve until SIGINT or SIGTERM.
func runConnector(args []string, _, stderr io.Writer) error {
	return runOptions(cli{name: "warren connector", usage: connectorUsage, signals: true}, NewConnectorOptions(), args, stderr, connector.Serve)
}
