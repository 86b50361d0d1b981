package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/connector"
	"github.com/warren-dev/warren/internal/auditrec"
)

const connectorUsage = `usage: warren connector --gateway https://HOST:PORT --token-file F --gateway-keys PUB[,PUB] [--state-dir DIR] [--ca-file F] [--kubeconfig F]

Dials out to the gateway and serves the Kubernetes API of this cluster through the tunnel, with the connector's
own credentials: the pod's service account by default, or --kubeconfig. It accepts no inbound connection (the
optional --health-listen serves probes only). Its identity at the gateway is a key of its own (kept in --state-dir):
it exchanges the join token of --token-file for short-lived credentials bound to that key, and renews them. Every
request must carry the gateway's assertion of it, signed by a key of --gateway-keys; the caller's rules in it are
checked again, under --policy.

`

func runConnector(args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren connector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	gatewayURL := fs.String("gateway", "", "the gateway's URL, https://HOST:PORT")
	tokenFile := fs.String("token-file", "", "file holding the connector's join token (warren token connector); re-read at every join and credential renewal, so a rotated token needs no restart")
	stateDir := fs.String("state-dir", "", "directory keeping the connector's key (connector.key), so that a restarted connector keeps its identity at the gateway; default: a new key, and identity, per start")
	caFile := fs.String("ca-file", "", "CA certificate(s) (PEM) that signed the gateway's certificate; default: system roots")
	pins := fs.String("pin", "", "SPKI pins of the gateway's certificate or an intermediate, sha256:BASE64, comma-separated (several for rotation); alone, a pin replaces CA verification")
	proxyURL := fs.String("proxy", "", "HTTP CONNECT proxy to reach the gateway, http://[user:password@]HOST:PORT; default: HTTPS_PROXY/NO_PROXY")
	tun := addTunnelFlags(fs)
	eksCluster := fs.String("eks-cluster", "", "reach this EKS cluster from outside it: endpoint and CA from EKS DescribeCluster, tokens from STS (AWS credentials from the standard chain)")
	region := fs.String("region", "", "AWS region of --eks-cluster")
	endpointURL := fs.String("endpoint-url", "", "AWS endpoint URL override for EKS and STS (tests, VPC endpoints)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig for the API server; default: in-cluster service account")
	gatewayKeys := fs.String("gateway-keys", "", "the gateway's public keys (signing.pub of its --gateway-key; several during a rotation), comma-separated PEM or JWKS files, re-read when they change and on SIGHUP: every request must carry the gateway's assertion of it signed by one of them")
	revoked := fs.String("revoked-tokens", "", "file of caller token ids (jti), one per line, whose requests this connector refuses; "+revokedHelp)
	disconnectExpired := fs.Bool("disconnect-expired-tokens", false, disconnectExpiredHelp)
	for _, name := range []string{"issuer-keys", "issuer-jwks-url", "algorithms", "max-token-lifetime"} {
		fs.Var(removedFlag("--"+name+" was removed: the connector no longer sees caller tokens (the gateway keeps them); it verifies the gateway's assertion of each request with --gateway-keys, the gateway's public key(s)"),
			name, "removed; see --gateway-keys")
	}
	policyFile := fs.String("policy", "", "the cluster's ceiling: a YAML file of rules; requests outside it are refused whatever the token says")
	impersonate := fs.Bool("impersonate", false, "reach the API server as the caller (Impersonate-User warren:<sub>, the caller's groups), as the gateway's assertion names them")
	stripHeaders := fs.String("strip-headers", "", "more request headers that never reach the API server, comma-separated, a trailing * for a prefix (X-Remote-*, X-Forwarded-*, X-Real-Ip and Forwarded always are): the cluster's --requestheader-*-headers names when they are not X-Remote-*")
	auditLog := addAuditFlags(fs, "", "audit log of the requests the connector serves or refuses: hash-chained JSON lines (- for standard output); default: none")
	name := fs.String("name", "", "this connector's name in the gateway's logs; default: host name")
	healthListen := fs.String("health-listen", "", "address for /healthz and /readyz probes (e.g. :8080); default: none")
	newLogger := logFlags(fs)
	fs.Usage = func() { fmt.Fprint(fs.Output(), connectorUsage); fs.PrintDefaults() }
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger()
	if err != nil {
		return err
	}
	switch {
	case *gatewayURL == "":
		return errors.New("missing --gateway: the gateway's URL, e.g. --gateway https://gateway.example.com:443")
	case *tokenFile == "":
		return errors.New("missing --token-file: the file holding this connector's token (made by warren token connector)")
	case *gatewayKeys == "":
		return errors.New("missing --gateway-keys: the gateway's public key(s) (signing.pub of the key given to warren gateway --gateway-key): the connector serves only requests the gateway signed an assertion of")
	}
	readToken := func() (string, error) {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return "", err
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("token file %s is empty", *tokenFile)
	}
	if _, err := readToken(); err != nil {
		return fmt.Errorf("cannot read the connector token: %v; check --token-file", err)
	}
	pinned, err := auth.NewKeyFiles(auth.DefaultCheckInterval, splitList(*gatewayKeys)...)
	if err != nil {
		return fmt.Errorf("--gateway-keys: %w", err)
	}
	var kube *rest.Config
	if *eksCluster != "" {
		if *kubeconfig != "" {
			return errors.New("give --eks-cluster or --kubeconfig, not both")
		}
		if kube, err = eksKubeConfig(context.Background(), *eksCluster, *region, *endpointURL); err != nil {
			return err
		}
	} else if kube, err = kubeConfig(*kubeconfig); err != nil {
		return err
	}
	tlsCfg, _, err := gatewayTLS(*caFile, splitList(*pins))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reloads := []func() error{pinned.Reload}
	mon := auth.NewMonitor(log)
	mon.Watch("--gateway-keys", pinned.Check)
	var revokedFn func(string) bool
	var refreshRevoked func() error
	rl, err := revocationList(*revoked, mon)
	if err != nil {
		return err
	}
	if rl != nil {
		revokedFn, refreshRevoked = rl.Revoked, rl.Refresh
		reloads = append(reloads, rl.Reload)
	}
	var ceiling *auth.Policy
	if *policyFile != "" {
		if ceiling, err = auth.LoadPolicy(*policyFile); err != nil {
			return fmt.Errorf("--policy: %w", err)
		}
	}
	var proxy func(*http.Request) (*url.URL, error)
	if *proxyURL != "" {
		u, err := url.Parse(*proxyURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--proxy %q: want http://[user:password@]HOST:PORT", *proxyURL)
		}
		proxy = http.ProxyURL(u)
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	var key ed25519.PrivateKey
	if *stateDir != "" {
		var created bool
		if key, created, err = connector.LoadOrCreateKey(*stateDir); err != nil {
			return fmt.Errorf("--state-dir: %w", err)
		}
		if created {
			log.Info("made a new connector key", "file", filepath.Join(*stateDir, connector.KeyFile))
		}
	}
	var auditSink audit.Sink
	l, err := auditLog.open(audit.ComponentConnector)
	if err != nil {
		return err
	}
	if l != nil {
		defer l.Close()
		auditSink = l
	}
	c, err := connector.New(connector.Config{
		GatewayURL:              *gatewayURL,
		Token:                   readToken,
		Key:                     key,
		TLSConfig:               tlsCfg,
		Kube:                    kube,
		GatewayKeys:             pinned,
		Revoked:                 revokedFn,
		RefreshRevoked:          refreshRevoked,
		DisconnectExpiredTokens: *disconnectExpired,
		Ceiling:                 ceiling,
		Impersonate:             *impersonate,
		StripHeaders:            splitList(*stripHeaders),
		Audit:                   auditSink,
		Proxy:                   proxy,
		Tunnel:                  tun.config(),
		Name:                    *name,
		Version:                 version,
		Logger:                  log,
	})
	if err != nil {
		return err
	}
	reloadOnHangup(ctx, log, reloads)
	monitorReloads(ctx, mon)
	if *healthListen != "" {
		ln, err := net.Listen("tcp", *healthListen)
		if err != nil {
			return fmt.Errorf("cannot listen on --health-listen %s: %v", *healthListen, err)
		}
		srv := &http.Server{Handler: healthHandler(c, auditSink, mon.Check), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}
	log.Info("connector starting", "gateway", *gatewayURL, "api_server", kube.Host, "version", version, "identity", c.Identity(),
		"gateway_keys", strings.Join(pinned.KeyIDs(), ","), "ceiling", *policyFile, "impersonate", *impersonate)
	err = c.Run(ctx)
	log.Info("connector stopped")
	return err
}

func kubeConfig(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("cannot load --kubeconfig: %v", err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no in-cluster credentials (%v): run inside a pod, or pass --kubeconfig", err)
	}
	return cfg, nil
}

// healthHandler answers probes: /healthz while the process runs, /readyz while a tunnel is up, the audit log takes
// records (the connector refuses requests it cannot audit) and ready reports no error (a key file or revocation
// list that failed to reload).
func healthHandler(c *connector.Connector, audit audit.Sink, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := auditrec.Err(audit); err != nil {
			http.Error(w, fmt.Sprintf("the audit log cannot be written (%v): requests are refused until it can", err), http.StatusServiceUnavailable)
			return
		}
		if !c.Connected() {
			http.Error(w, "not connected to the gateway", http.StatusServiceUnavailable)
			return
		}
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}
