package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/gatewaytls"
	"github.com/warren-dev/warren/internal/awsconfig"
)

// InstallConfig is a `warren bootstrap ssm` run: the script's settings and the files Install reads into them, and
// where to send it. Errors name the flag of the setting at fault.
type InstallConfig struct {
	// Script configures the script. Install fills Token (from TokenFile), GatewayKeysPEM, ReleaseKeyPEM, CAPEM
	// and Digests.
	Script ScriptConfig
	// TokenFile holds the connector token, sent in the command; "" when Script.TokenParameter names it.
	TokenFile string
	// GatewayKeyFiles are the gateway's PEM public keys, installed for the connector's --gateway-keys. Required.
	GatewayKeyFiles []string
	// ReleaseKeyFile, when set, is the public key that signed the connector binaries.
	ReleaseKeyFile string
	// CAFile, when set, holds the CA that signed the gateway's certificate; installed on the instances.
	CAFile string
	// Preflight fetches the binaries' SHA-256 from the gateway before sending. Default true.
	Preflight bool
	// PrintScript writes the script (the token masked) to Out and sends nothing.
	PrintScript bool
	// Region and EndpointURL choose the SSM endpoint ("": AWS_REGION or the shared config; the public one).
	Region, EndpointURL string
	// InstanceIDs, Comment and Timeout are RunConfig's. Timeout default 10 minutes.
	InstanceIDs []string
	Comment     string
	Timeout     time.Duration
	// Out receives the script (PrintScript) or the summary; Progress the progress lines.
	Out, Progress io.Writer
}

// DefaultInstallConfig returns the defaults of InstallConfig, for flags and documentation.
func DefaultInstallConfig() InstallConfig {
	return InstallConfig{
		Script:    ScriptConfig{ServiceUser: DefaultServiceUser, ConnectWait: 30 * time.Second},
		Preflight: true,
		Timeout:   10 * time.Minute,
	}
}

// Install reads what cfg names, builds the script and runs it on the instances through SSM, then writes the
// summary; it fails when any instance failed.
func Install(ctx context.Context, cfg InstallConfig) error {
	sc := cfg.Script
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("cannot read --token-file: %v", err)
		}
		if sc.Token = strings.TrimSpace(string(b)); sc.Token == "" {
			return fmt.Errorf("--token-file %s is empty", cfg.TokenFile)
		}
	}
	for _, f := range cfg.GatewayKeyFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("cannot read --gateway-keys: %v", err)
		}
		if _, err := auth.LoadPublicKeys(f); err != nil || !strings.Contains(string(b), "-----BEGIN PUBLIC KEY-----") {
			return fmt.Errorf("--gateway-keys %s: want PEM public keys (signing.pub from warren keygen)", f)
		}
		sc.GatewayKeysPEM = append(sc.GatewayKeysPEM, b...)
	}
	if cfg.ReleaseKeyFile != "" {
		var err error
		if sc.ReleaseKeyPEM, err = os.ReadFile(cfg.ReleaseKeyFile); err != nil {
			return fmt.Errorf("cannot read --release-key: %v", err)
		}
	}
	tlsCfg, caPEM, err := gatewaytls.Load(cfg.CAFile, sc.Pins)
	if err != nil {
		return err
	}
	sc.CAPEM = caPEM
	if err := sc.Validate(); err != nil {
		return err
	}
	if cfg.PrintScript {
		masked := sc
		if masked.Token != "" {
			masked.Token = "REDACTED.CONNECTOR.TOKEN"
		}
		script, err := Script(masked)
		if err != nil {
			return err
		}
		fmt.Fprint(cfg.Out, script)
		return nil
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	if cfg.Preflight {
		tr := &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}
		defer tr.CloseIdleConnections()
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		digests, err := FetchDigests(pctx, &http.Client{Transport: tr}, sc.Gateway)
		cancel()
		if err != nil {
			return err
		}
		sc.Digests = digests
		for p, d := range digests {
			fmt.Fprintf(progress, "gateway serves warren-%s, SHA-256 %s\n", p, d)
			if pin := sc.PinnedDigests[p]; pin != "" && pin != d {
				return fmt.Errorf("the gateway serves warren-%s with SHA-256 %s, not the %s of --connector-sha256: it serves another "+
					"build than the release you pinned; nothing was sent", p, d, pin)
			}
		}
	}
	script, err := Script(sc)
	if err != nil {
		return err
	}
	awsCfg, err := awsconfig.Load(ctx, cfg.Region, cfg.EndpointURL)
	if err != nil {
		return err
	}
	if awsCfg.Region == "" {
		return errors.New("no AWS region: pass --region (or set AWS_REGION)")
	}
	id, results, err := Run(ctx, RunConfig{
		Client:      ssm.NewFromConfig(awsCfg),
		InstanceIDs: cfg.InstanceIDs,
		Script:      script,
		Comment:     cfg.Comment,
		Timeout:     cfg.Timeout,
		Progress:    progress,
	})
	if err != nil {
		return err
	}
	WriteSummary(cfg.Out, id, results)
	if failed := Failed(results); len(failed) > 0 {
		return fmt.Errorf("%d of %d instances failed: %s", len(failed), len(results), strings.Join(failed, ", "))
	}
	return nil
}
