package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/warren-dev/warren/auth"
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

func runBootstrap(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "ssm" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stderr, bootstrapUsage)
			return flag.ErrHelp
		}
		return errors.New("usage: warren bootstrap ssm [flags]; run `warren bootstrap ssm --help` for the flags")
	}
	fs := flag.NewFlagSet("warren bootstrap ssm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	region := fs.String("region", "", "AWS region of the instances; default: AWS_REGION or the shared config")
	var instances, connectorArgs stringList
	fs.Var(&instances, "instance-id", "an EC2 (or SSM managed) instance to install the connector on; repeat, or comma-separate")
	gatewayURL := fs.String("gateway", "", "the gateway's URL, https://HOST:PORT, as the instances reach it")
	tokenFile := fs.String("token-file", "", "file holding the connector token (warren token connector), sent in the SSM command")
	tokenParam := fs.String("token-parameter", "", "name of an SSM SecureString parameter holding the connector token, read by the instances instead of sending it")
	endpointURL := fs.String("endpoint-url", "", "SSM endpoint URL override (VPC endpoint, tests)")
	caFile := fs.String("ca-file", "", "CA certificate(s) (PEM) that signed the gateway's certificate; installed on the instances")
	gatewayKeys := fs.String("gateway-keys", "", "the gateway's public key(s), PEM files (signing.pub of its --gateway-key), comma-separated; installed for the connector's --gateway-keys")
	pins := fs.String("pin", "", "SPKI pins of the gateway's certificate, sha256:BASE64, comma-separated (see warren connector --pin)")
	proxy := fs.String("proxy", "", "HTTP CONNECT proxy the instances reach the gateway through, http://[user:password@]HOST:PORT")
	kubeconfig := fs.String("kubeconfig", "", "path, on the instances, of the kubeconfig the connector uses")
	eksCluster := fs.String("eks-cluster", "", "EKS cluster the connector reaches with the instance role (warren connector --eks-cluster)")
	eksRegion := fs.String("eks-region", "", "region of --eks-cluster; default: the instance's region")
	fs.Var(&connectorArgs, "connector-arg", "one more flag for warren connector on the instances, e.g. --connector-arg=--policy=/etc/warren/policy.yaml; repeat")
	serviceUser := fs.String("service-user", bootstrap.DefaultServiceUser, "system user the service runs as, created when missing; root to run as root")
	clusterName := fs.String("cluster-name", "", "the cluster's name, for display in the SSM command's comment")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for all instances: delivery, installation and connection")
	connectWait := fs.Duration("connect-wait", 30*time.Second, "how long each instance waits for its connector to connect to the gateway before reporting failure; 0 to not wait")
	pinned := fs.String("connector-sha256", "", "SHA-256 of the connector binaries you computed from a release you trust, linux/amd64=HEX,linux/arm64=HEX: instances install only exactly that binary, whatever the gateway serves")
	releaseKey := fs.String("release-key", "", "public key (signing.pub of warren keygen) that signed the connector binaries (warren sign): instances check DOWNLOAD.sig with OpenSSL 1.1.1 or later before installing")
	noPreflight := fs.Bool("no-preflight", false, "do not fetch the binaries' SHA-256 from the gateway from here first (when only the instances can reach it)")
	printScript := fs.Bool("print-script", false, "print the script (with the token masked) and exit, sending nothing")
	fs.Usage = func() { fmt.Fprint(fs.Output(), bootstrapUsage); fs.PrintDefaults() }
	// Progress goes straight to the terminal: stderr here is held back until the command returns.
	progress := os.Stderr
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	var ids []string
	for _, v := range instances {
		ids = append(ids, splitList(v)...)
	}
	switch {
	case len(ids) == 0 && !*printScript:
		return errors.New("missing --instance-id: the instance(s) to install the connector on")
	case *gatewayURL == "":
		return errors.New("missing --gateway: the gateway's URL as the instances reach it, e.g. --gateway https://gateway.example.com")
	case (*tokenFile == "") == (*tokenParam == ""):
		return errors.New("give --token-file (the connector token, from warren token connector) or --token-parameter (an SSM parameter holding it)")
	case *gatewayKeys == "":
		return errors.New("missing --gateway-keys: the gateway's public key(s) (signing.pub of its --gateway-key), which the connector pins to verify the gateway's assertion of each request")
	case (*kubeconfig == "") == (*eksCluster == ""):
		return errors.New("give --kubeconfig (a kubeconfig path on the instances) or --eks-cluster (reach EKS with the instance role)")
	case *timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	if u, err := url.Parse(*gatewayURL); err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("--gateway %q: want https://HOST[:PORT]", *gatewayURL)
	}
	cfg := bootstrap.ScriptConfig{
		Gateway:        strings.TrimSuffix(*gatewayURL, "/"),
		TokenParameter: *tokenParam,
		Pins:           splitList(*pins),
		Proxy:          *proxy,
		Kubeconfig:     *kubeconfig,
		EKSCluster:     *eksCluster,
		EKSRegion:      *eksRegion,
		ConnectorArgs:  connectorArgs,
		ServiceUser:    *serviceUser,
		ConnectWait:    *connectWait,
		Version:        version,
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("cannot read --token-file: %v", err)
		}
		if cfg.Token = strings.TrimSpace(string(b)); cfg.Token == "" {
			return fmt.Errorf("--token-file %s is empty", *tokenFile)
		}
	}
	for _, f := range splitList(*gatewayKeys) {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("cannot read --gateway-keys: %v", err)
		}
		if _, err := auth.LoadPublicKeys(f); err != nil || !strings.Contains(string(b), "-----BEGIN PUBLIC KEY-----") {
			return fmt.Errorf("--gateway-keys %s: want PEM public keys (signing.pub from warren keygen)", f)
		}
		cfg.GatewayKeysPEM = append(cfg.GatewayKeysPEM, b...)
	}
	var err error
	if cfg.PinnedDigests, err = parsePinnedDigests(*pinned); err != nil {
		return err
	}
	if *releaseKey != "" {
		if cfg.ReleaseKeyPEM, err = os.ReadFile(*releaseKey); err != nil {
			return fmt.Errorf("cannot read --release-key: %v", err)
		}
	}
	tlsCfg, caPEM, err := gatewayTLS(*caFile, cfg.Pins)
	if err != nil {
		return err
	}
	cfg.CAPEM = caPEM
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *printScript {
		masked := cfg
		if masked.Token != "" {
			masked.Token = "REDACTED.CONNECTOR.TOKEN"
		}
		script, err := bootstrap.Script(masked)
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, script)
		return nil
	}
	if !*noPreflight {
		tr := &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}
		defer tr.CloseIdleConnections()
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		digests, err := bootstrap.FetchDigests(pctx, &http.Client{Transport: tr}, cfg.Gateway)
		cancel()
		if err != nil {
			return err
		}
		cfg.Digests = digests
		for p, d := range digests {
			fmt.Fprintf(progress, "gateway serves warren-%s, SHA-256 %s\n", p, d)
			if pin := cfg.PinnedDigests[p]; pin != "" && pin != d {
				return fmt.Errorf("the gateway serves warren-%s with SHA-256 %s, not the %s of --connector-sha256: it serves another "+
					"build than the release you pinned; nothing was sent", p, d, pin)
			}
		}
	}
	script, err := bootstrap.Script(cfg)
	if err != nil {
		return err
	}
	awsCfg, err := loadAWSConfig(ctx, *region, *endpointURL)
	if err != nil {
		return err
	}
	if awsCfg.Region == "" {
		return errors.New("no AWS region: pass --region (or set AWS_REGION)")
	}
	comment := "warren bootstrap: connector"
	if *clusterName != "" {
		comment += " for " + *clusterName
	}
	id, results, err := bootstrap.Run(ctx, bootstrap.RunConfig{
		Client:      ssm.NewFromConfig(awsCfg),
		InstanceIDs: ids,
		Script:      script,
		Comment:     comment,
		Timeout:     *timeout,
		Progress:    progress,
	})
	if err != nil {
		return err
	}
	bootstrap.WriteSummary(stdout, id, results)
	if failed := bootstrap.Failed(results); len(failed) > 0 {
		return fmt.Errorf("%d of %d instances failed: %s", len(failed), len(results), strings.Join(failed, ", "))
	}
	return nil
}
