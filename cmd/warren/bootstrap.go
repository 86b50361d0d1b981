package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/warren-dev/warren/bootstrap"
	"github.com/warren-dev/warren/internal/download"
)

const bootstrapUsage = `usage: warren bootstrap ssm --region R --instance-id ID [--instance-id ID ...] --gateway https://HOST:PORT
                            --token-file F --gateway-keys PUB (--kubeconfig PATH | --eks-cluster NAME) [--ca-file F] [--pin P] [--endpoint-url U]

Installs the connector on EC2 instances inside a private VPC through AWS Systems Manager Run Command, for a cluster
nobody can reach from outside yet (a private EKS endpoint). SendCommand (AWS-RunShellScript) runs a script on each
instance that downloads the connector for its architecture from GATEWAY/download/warren-linux-{amd64,arm64},
checks its SHA-256 (against the gateway's .sha256 and the digest taken from here before sending; and, independently
of the gateway, against --connector-sha256 and the release signature of --release-key when given), installs it as
/usr/local/bin/warren, writes the token to /etc/warren/connector.token (0600) and the settings to
/etc/warren/connector.env, and runs it as the systemd service warren-connector (Restart=always) as the system user
--service-user. The connector on the instance reaches the API server with --kubeconfig (a path on the instance) or,
with --eks-cluster, with the instance role's AWS credentials (grant that role access to the cluster: an EKS access
entry or aws-auth). Then it follows GetCommandInvocation until every instance has finished and prints a summary;
the exit status is 1 when any instance failed.

AWS credentials come from the standard chain (AWS_ACCESS_KEY_ID..., AWS_PROFILE, ~/.aws, SSO, instance role);
they need ssm:SendCommand (document AWS-RunShellScript and the instances) and ssm:GetCommandInvocation.

The token: SSM keeps a command's parameters (this script) for up to 30 days, visible to whoever may
ssm:ListCommands in the account. The script never prints the token, so it is in no output or log, but it is in
the stored command. To keep it out, store it as a SecureString parameter and pass --token-parameter NAME instead of
--token-file: the instance reads it with the AWS CLI (the instance role needs ssm:GetParameter and kms:Decrypt).

`

// parsePinnedDigests reads --connector-sha256: PLATFORM=HEX pairs, comma-separated, the platform as linux/amd64
// or linux-amd64.
func parsePinnedDigests(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	pins := map[string]string{}
	for _, item := range splitList(s) {
		platform, sum, ok := strings.Cut(item, "=")
		platform = strings.ReplaceAll(platform, "/", "-")
		if !ok || !slices.Contains(download.Platforms, platform) {
			return nil, fmt.Errorf("--connector-sha256 %q: want PLATFORM=SHA256 with PLATFORM one of linux/amd64, linux/arm64, e.g. linux/amd64=$(sha256sum warren-linux-amd64 | cut -c1-64)", item)
		}
		if _, dup := pins[platform]; dup {
			return nil, fmt.Errorf("--connector-sha256 names %s twice", platform)
		}
		pins[platform] = strings.ToLower(sum)
	}
	return pins, nil
}

// BootstrapOptions are the flags of `warren bootstrap ssm`; Validate turns them into bootstrap.InstallConfig.
type BootstrapOptions struct {
	install                            bootstrap.InstallConfig // flags bound to its fields where the types match
	instances, connectorArgs           stringList
	gatewayKeys, pins, pinned, cluster string // comma-separated, or to parse
	noPreflight                        bool
}

// NewBootstrapOptions returns the options with the library's defaults.
func NewBootstrapOptions() *BootstrapOptions {
	return &BootstrapOptions{install: bootstrap.DefaultInstallConfig()}
}

// AddFlags binds the options to fs.
func (o *BootstrapOptions) AddFlags(fs *flag.FlagSet) {
	in, sc := &o.install, &o.install.Script
	fs.StringVar(&in.Region, "region", "", "AWS region of the instances; default: AWS_REGION or the shared config")
	fs.Var(&o.instances, "instance-id", "an EC2 (or SSM managed) instance to install the connector on; repeat, or comma-separate")
	fs.StringVar(&sc.Gateway, "gateway", "", "the gateway's URL, https://HOST:PORT, as the instances reach it")
	fs.StringVar(&in.TokenFile, "token-file", "", "file holding the connector token (warren token connector), sent in the SSM command")
	fs.StringVar(&sc.TokenParameter, "token-parameter", "", "name of an SSM SecureString parameter holding the connector token, read by the instances instead of sending it")
	fs.StringVar(&in.EndpointURL, "endpoint-url", "", "SSM endpoint URL override (VPC endpoint, tests)")
	fs.StringVar(&in.CAFile, "ca-file", "", "CA certificate(s) (PEM) that signed the gateway's certificate; installed on the instances")
	fs.StringVar(&o.gatewayKeys, "gateway-keys", "", "the gateway's public key(s), PEM files (signing.pub of its --gateway-key), comma-separated; installed for the connector's --gateway-keys")
	fs.StringVar(&o.pins, "pin", "", "SPKI pins of the gateway's certificate, sha256:BASE64, comma-separated (see warren connector --pin)")
	fs.StringVar(&sc.Proxy, "proxy", "", "HTTP CONNECT proxy the instances reach the gateway through, http://[user:password@]HOST:PORT")
	fs.StringVar(&sc.Kubeconfig, "kubeconfig", "", "path, on the instances, of the kubeconfig the connector uses")
	fs.StringVar(&sc.EKSCluster, "eks-cluster", "", "EKS cluster the connector reaches with the instance role (warren connector --eks-cluster)")
	fs.StringVar(&sc.EKSRegion, "eks-region", "", "region of --eks-cluster; default: the instance's region")
	fs.Var(&o.connectorArgs, "connector-arg", "one more flag for warren connector on the instances, e.g. --connector-arg=--policy=/etc/warren/policy.yaml; repeat")
	fs.StringVar(&sc.ServiceUser, "service-user", sc.ServiceUser, "system user the service runs as, created when missing; root to run as root")
	fs.StringVar(&o.cluster, "cluster-name", "", "the cluster's name, for display in the SSM command's comment")
	fs.DurationVar(&in.Timeout, "timeout", in.Timeout, "how long to wait for all instances: delivery, installation and connection")
	fs.DurationVar(&sc.ConnectWait, "connect-wait", sc.ConnectWait, "how long each instance waits for its connector to connect to the gateway before reporting failure; 0 to not wait")
	fs.StringVar(&o.pinned, "connector-sha256", "", "SHA-256 of the connector binaries you computed from a release you trust, linux/amd64=HEX,linux/arm64=HEX: instances install only exactly that binary, whatever the gateway serves")
	fs.StringVar(&in.ReleaseKeyFile, "release-key", "", "public key (signing.pub of warren keygen) that signed the connector binaries (warren sign): instances check DOWNLOAD.sig with OpenSSL 1.1.1 or later before installing")
	fs.BoolVar(&o.noPreflight, "no-preflight", !in.Preflight, "do not fetch the binaries' SHA-256 from the gateway from here first (when only the instances can reach it)")
	fs.BoolVar(&in.PrintScript, "print-script", in.PrintScript, "print the script (with the token masked) and exit, sending nothing")
}

// Validate checks the flags together and returns what bootstrap.Install runs. It reads no file: Install does, and
// says which flag was at fault.
func (o *BootstrapOptions) Validate() (bootstrap.InstallConfig, error) {
	cfg := o.install
	cfg.InstanceIDs = nil
	for _, v := range o.instances {
		cfg.InstanceIDs = append(cfg.InstanceIDs, splitList(v)...)
	}
	sc := &cfg.Script
	switch {
	case len(cfg.InstanceIDs) == 0 && !cfg.PrintScript:
		return cfg, errors.New("missing --instance-id: the instance(s) to install the connector on")
	case sc.Gateway == "":
		return cfg, errors.New("missing --gateway: the gateway's URL as the instances reach it, e.g. --gateway https://gateway.example.com")
	case (cfg.TokenFile == "") == (sc.TokenParameter == ""):
		return cfg, errors.New("give --token-file (the connector token, from warren token connector) or --token-parameter (an SSM parameter holding it)")
	case o.gatewayKeys == "":
		return cfg, errors.New("missing --gateway-keys: the gateway's public key(s) (signing.pub of its --gateway-key), which the connector pins to verify the gateway's assertion of each request")
	case (sc.Kubeconfig == "") == (sc.EKSCluster == ""):
		return cfg, errors.New("give --kubeconfig (a kubeconfig path on the instances) or --eks-cluster (reach EKS with the instance role)")
	case cfg.Timeout <= 0:
		return cfg, errors.New("--timeout must be positive")
	}
	if u, err := url.Parse(sc.Gateway); err != nil || u.Scheme != "https" || u.Host == "" {
		return cfg, fmt.Errorf("--gateway %q: want https://HOST[:PORT]", sc.Gateway)
	}
	var err error
	if sc.PinnedDigests, err = parsePinnedDigests(o.pinned); err != nil {
		return cfg, err
	}
	sc.Gateway = strings.TrimSuffix(sc.Gateway, "/")
	sc.Pins = splitList(o.pins)
	sc.ConnectorArgs = o.connectorArgs
	sc.Version = version
	cfg.GatewayKeyFiles = splitList(o.gatewayKeys)
	cfg.Preflight = !o.noPreflight
	cfg.Comment = "warren bootstrap: connector"
	if o.cluster != "" {
		cfg.Comment += " for " + o.cluster
	}
	return cfg, nil
}

// runBootstrap implements `warren bootstrap ssm`: bootstrap.Install.
func runBootstrap(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "ssm" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stderr, bootstrapUsage)
			return flag.ErrHelp
		}
		return errors.New("usage: warren bootstrap ssm [flags]; run `warren bootstrap ssm --help` for the flags")
	}
	return runOptions(cli{name: "warren bootstrap ssm", usage: bootstrapUsage, signals: true}, NewBootstrapOptions(), args[1:], stderr, func(ctx context.Context, cfg bootstrap.InstallConfig) error {
		// Progress goes straight to the terminal: stderr here is held back until the command returns.
		cfg.Out, cfg.Progress = stdout, os.Stderr
		return bootstrap.Install(ctx, cfg)
	})
}
