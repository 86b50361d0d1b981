package main

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/bootstrap"
	"github.com/warren-dev/warren/connector"
	"github.com/warren-dev/warren/gateway"
	"github.com/warren-dev/warren/tunnel"
)

// validate parses args into o as the command does and returns what Validate makes of them.
func validate[C any](t *testing.T, o options[C], args ...string) (C, error) {
	t.Helper()
	fs := flag.NewFlagSet("warren test", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	o.AddFlags(fs)
	parse := parseFlags
	if p, ok := any(o).(argsParser); ok {
		parse = p.ParseArgs
	}
	if err := parse(fs, args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return o.Validate()
}

// gatewayArgs are the flags a gateway needs; Validate reads none of the files.
var gatewayArgs = []string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--connector-keys", "a.pub, b.pub", "--gateway-key", "g.key", "--issuer-keys", "i.pub"}

// TestGatewayOptionsDefaults: the flags' defaults are the libraries' (gateway, tunnel, auth), and what is given
// reaches the config.
func TestGatewayOptionsDefaults(t *testing.T) {
	cfg, err := validate(t, NewGatewayOptions(), gatewayArgs...)
	if err != nil {
		t.Fatal(err)
	}
	d, td := gateway.DefaultServeConfig(), tunnel.DefaultConfig()
	g, tun := cfg.Gateway, cfg.Gateway.Tunnel
	for name, eq := range map[string]bool{
		"listen":                       cfg.Listen == d.Listen,
		"max-connector-token-lifetime": cfg.MaxConnectorTokenLifetime == d.MaxConnectorTokenLifetime,
		"audit-log":                    cfg.AuditLog == "-",
		"connectors":                   g.Connectors == gateway.DefaultConnectorConfig(),
		"max-stream-duration":          g.MaxStreamDuration == d.Gateway.MaxStreamDuration,
		"idle-write-timeout":           g.IdleWriteTimeout == d.Gateway.IdleWriteTimeout,
		"max-header-bytes":             g.MaxHeaderBytes == d.Gateway.MaxHeaderBytes,
		"front door":                   g.FrontDoor.MaxUnauthenticated == d.Gateway.FrontDoor.MaxUnauthenticated && g.FrontDoor.HeaderTimeout == d.Gateway.FrontDoor.HeaderTimeout,
		"ping-interval":                tun.PingInterval == td.PingInterval,
		"keepalive-interval":           tun.KeepAliveInterval == td.KeepAliveInterval,
		"write-timeout":                tun.WriteTimeout == td.WriteTimeout,
		"max-streams":                  tun.MaxStreams == td.MaxStreams,
		"max-token-lifetime":           cfg.Callers.MaxLifetime == auth.DefaultCallerKeyFiles().MaxLifetime,
		"algorithms":                   reflect.DeepEqual(cfg.Callers.Algorithms, []string{auth.AlgEdDSA}),
		"connector-keys":               reflect.DeepEqual(cfg.ConnectorKeyFiles, []string{"a.pub", "b.pub"}),
		"issuer-keys":                  reflect.DeepEqual(cfg.Callers.KeyFiles, []string{"i.pub"}),
		"limits":                       g.Limits != nil,
		"logger":                       g.Logger != nil,
	} {
		if !eq {
			t.Errorf("%s: not the library's default or not what was given: %+v", name, cfg)
		}
	}
	cfg, err = validate(t, NewGatewayOptions(), append(gatewayArgs, "--max-streams", "7", "--ping-interval", "3s", "--clusters", "a, b",
		"--trusted-proxies", "10.0.0.0/8", "--proxy-protocol", "--disconnect-expired-tokens")...)
	if err != nil {
		t.Fatal(err)
	}
	if g := cfg.Gateway; g.Tunnel.MaxStreams != 7 || g.Tunnel.PingInterval != 3*time.Second || !reflect.DeepEqual(g.Clusters, []string{"a", "b"}) ||
		len(g.FrontDoor.TrustedProxies) != 1 || !g.FrontDoor.ProxyProtocol || !g.DisconnectExpiredTokens {
		t.Errorf("flags not in the config: %+v", g)
	}
}

// TestOptionsValidate: flag combinations that cannot run are refused by Validate, in-process, with the message
// and exit status the binary gives.
func TestOptionsValidate(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	connectorArgs := []string{"--gateway", "https://gw", "--token-file", "t", "--gateway-keys", "g.pub"}
	bootstrapArgs := []string{"--instance-id", "i-1", "--gateway", "https://gw", "--token-file", "t", "--gateway-keys", "g.pub", "--kubeconfig", "/k"}
	for _, c := range []struct {
		name string
		cmd  string
		args []string
		want string
	}{
		{"gateway: proxy protocol without proxies", "gateway", append(gatewayArgs, "--proxy-protocol"),
			"--proxy-protocol needs --trusted-proxies: the addresses of the load balancers whose PROXY header to honour"},
		{"gateway: a bad trusted proxy", "gateway", append(gatewayArgs, "--trusted-proxies", "10.0.0.0/99"), "--trusted-proxies: "},
		{"gateway: no tunnel share", "gateway", append(gatewayArgs, "--token-tunnel-share", "0"),
			"--token-tunnel-share 0: want a fraction of a tunnel's streams, more than 0 and at most 1"},
		{"gateway: too large a tunnel share", "gateway", append(gatewayArgs, "--token-tunnel-share", "1.5"),
			"--token-tunnel-share 1.5: want a fraction of a tunnel's streams, more than 0 and at most 1"},
		{"gateway: no idle write timeout", "gateway", append(gatewayArgs, "--idle-write-timeout", "0s"), "--idle-write-timeout 0s: want a positive duration"},
		{"gateway: download dir that is a file", "gateway", append(gatewayArgs, "--download-dir", notDir), "--download-dir " + notDir + " is not a directory"},
		{"gateway: an audit key without a log", "gateway", append(gatewayArgs, "--audit-log", "", "--audit-signing-key", "k"), "--audit-signing-key needs --audit-log"},
		{"gateway: a bad log level", "gateway", append(gatewayArgs, "--log-level", "loud"), `invalid --log-level "loud": want debug, info, warn or error`},
		{"gateway: a bad log format", "gateway", append(gatewayArgs, "--log-format", "xml"), `invalid --log-format "xml": want text or json`},
		{"gateway: no connector keys", "gateway", []string{"--tls-cert", "c", "--tls-key", "k", "--gateway-key", "g"},
			"missing --connector-keys: the public key(s) that sign connector tokens (signing.pub from warren keygen)"},
		{"connector: no token file", "connector", []string{"--gateway", "https://gw"},
			"missing --token-file: the file holding this connector's token (made by warren token connector)"},
		{"connector: EKS and a kubeconfig", "connector", append(connectorArgs, "--eks-cluster", "prod", "--kubeconfig", "k"), "give --eks-cluster or --kubeconfig, not both"},
		{"connector: a proxy without a scheme", "connector", append(connectorArgs, "--proxy", "proxy:3128"), `--proxy "proxy:3128": want http://[user:password@]HOST:PORT`},
		{"connector: a socks proxy", "connector", append(connectorArgs, "--proxy", "socks5://proxy:1080"), `--proxy "socks5://proxy:1080": want http://[user:password@]HOST:PORT`},
		{"connector: an audit key without a log", "connector", append(connectorArgs, "--audit-signing-key", "k"), "--audit-signing-key needs --audit-log"},
		{"bootstrap: token file and parameter", "bootstrap", append(bootstrapArgs, "--token-parameter", "p"),
			"give --token-file (the connector token, from warren token connector) or --token-parameter (an SSM parameter holding it)"},
		{"bootstrap: kubeconfig and EKS", "bootstrap", append(bootstrapArgs, "--eks-cluster", "prod"),
			"give --kubeconfig (a kubeconfig path on the instances) or --eks-cluster (reach EKS with the instance role)"},
		{"bootstrap: no timeout", "bootstrap", append(bootstrapArgs, "--timeout", "0s"), "--timeout must be positive"},
		{"bootstrap: a plain http gateway", "bootstrap", []string{"--instance-id", "i-1", "--gateway", "http://gw", "--token-file", "t", "--gateway-keys", "g.pub", "--kubeconfig", "/k"},
			`--gateway "http://gw": want https://HOST[:PORT]`},
		{"bootstrap: no instance", "bootstrap", bootstrapArgs[2:], "missing --instance-id: the instance(s) to install the connector on"},
		{"bootstrap: a pin of two platforms at once", "bootstrap", append(bootstrapArgs, "--connector-sha256", "linux/amd64=a,linux-amd64=b"), "--connector-sha256 names linux-amd64 twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var err error
			args := c.args
			switch c.cmd {
			case "gateway":
				_, err = validate(t, NewGatewayOptions(), args...)
			case "connector":
				_, err = validate(t, NewConnectorOptions(), args...)
			case "bootstrap":
				_, err = validate(t, NewBootstrapOptions(), args...)
				args = append([]string{"ssm"}, args...)
			}
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("Validate: %v\nwant %s", err, c.want)
			}
			// The binary says the same, in one line, exit 1, before it reads any file.
			code, _, stderr := runCmd(t, append([]string{c.cmd}, args...)...)
			if want := "warren " + c.cmd + ": " + err.Error() + "\n"; code != 1 || stderr != want {
				t.Errorf("warren %s: exit %d %q\nwant exit 1 %q", c.cmd, code, stderr, want)
			}
		})
	}
}

// TestConnectorOptionsDefaults: the connector's flags take the libraries' defaults and reach its config.
func TestConnectorOptionsDefaults(t *testing.T) {
	cfg, err := validate(t, NewConnectorOptions(), "--gateway", "https://gw", "--token-file", "t", "--gateway-keys", "a.pub,b.pub",
		"--strip-headers", "X-A, X-B-*", "--pin", "sha256:x", "--write-timeout", "4s")
	if err != nil {
		t.Fatal(err)
	}
	c, td := cfg.Connector, tunnel.DefaultConfig()
	if c.Tunnel.PingInterval != td.PingInterval || c.Tunnel.MaxStreams != td.MaxStreams || c.Tunnel.WriteTimeout != 4*time.Second ||
		c.DrainTimeout != connector.DefaultConfig().DrainTimeout || c.Version != version || c.Proxy != nil ||
		!reflect.DeepEqual(c.StripHeaders, []string{"X-A", "X-B-*"}) || !reflect.DeepEqual(cfg.GatewayKeyFiles, []string{"a.pub", "b.pub"}) ||
		!reflect.DeepEqual(cfg.Pins, []string{"sha256:x"}) || cfg.AuditLog != "" {
		t.Errorf("connector config: %+v", cfg)
	}
}

// TestBootstrapOptionsDefaults: bootstrap's flags take the library's defaults and reach its config.
func TestBootstrapOptionsDefaults(t *testing.T) {
	cfg, err := validate(t, NewBootstrapOptions(), "--instance-id", "i-1,i-2", "--instance-id", "i-3", "--gateway", "https://gw/", "--token-file", "t",
		"--gateway-keys", "g.pub", "--kubeconfig", "/k", "--cluster-name", "prod", "--connector-arg=--policy=/p")
	if err != nil {
		t.Fatal(err)
	}
	d := bootstrap.DefaultInstallConfig()
	if cfg.Timeout != d.Timeout || cfg.Script.ConnectWait != d.Script.ConnectWait || cfg.Script.ServiceUser != bootstrap.DefaultServiceUser ||
		!cfg.Preflight || cfg.Script.Gateway != "https://gw" || cfg.Comment != "warren bootstrap: connector for prod" ||
		!reflect.DeepEqual(cfg.InstanceIDs, []string{"i-1", "i-2", "i-3"}) || !reflect.DeepEqual(cfg.Script.ConnectorArgs, []string{"--policy=/p"}) {
		t.Errorf("bootstrap config: %+v", cfg)
	}
}
