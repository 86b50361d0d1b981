package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/connector/eks"
	"github.com/warren-dev/warren/gatewaytls"
)

// ServeConfig is a connector process (`warren connector`): the Connector's Config, and the files and the probe
// listener Serve loads and owns. Errors name the flag of the setting at fault.
type ServeConfig struct {
	// Connector configures the Connector. Serve fills Token, Key, TLSConfig, Kube, GatewayKeys, Revoked,
	// RefreshRevoked, Ceiling and Audit from the settings below, and Name with the host name when it is "";
	// Logger is used for Serve's own logs too.
	Connector Config
	// TokenFile holds the join token, re-read at every join and renewal. Required.
	TokenFile string
	// StateDir keeps the connector's key (KeyFile) across restarts; "": a new key per start.
	StateDir string
	// CAFile holds the CA certificates that signed the gateway's certificate; "": the system roots.
	CAFile string
	// Pins are SPKI pins of the gateway's certificate or an intermediate (ParsePins).
	Pins []string
	// Kubeconfig reaches the API server; "" (and no EKSCluster): the pod's service account.
	Kubeconfig string
	// EKSCluster reaches that EKS cluster from outside it, in Region, through EndpointURL when set.
	EKSCluster, Region, EndpointURL string
	// GatewayKeyFiles are the gateway's public keys, pinned (Config.GatewayKeys). Required.
	GatewayKeyFiles []string
	// RevokedFile lists caller token ids this connector refuses; "" for none.
	RevokedFile string
	// PolicyFile is the cluster's ceiling (Config.Ceiling); "" for none.
	PolicyFile string
	// AuditLog is the audit log's path, "-" for standard output; "" for none. AuditSigningKeyFile, when set,
	// signs its checkpoints.
	AuditLog, AuditSigningKeyFile string
	// HealthListen, when set, serves /healthz and /readyz there (HealthHandler).
	HealthListen string
}

// DefaultServeConfig returns the defaults of ServeConfig, for flags and documentation.
func DefaultServeConfig() ServeConfig {
	return ServeConfig{Connector: DefaultConfig()}
}

// TokenFile returns a Config.Token that reads the join token from path at every call.
func TokenFile(path string) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("token file %s is empty", path)
	}
}

// KubeConfig loads the kubeconfig at path, or the pod's service account when path is "".
func KubeConfig(path string) (*rest.Config, error) {
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

// Serve loads what cfg names and runs the connector until ctx is done: it drains (Config.DrainTimeout), then
// stops the probe listener. Every server and loop it starts has ended when it returns.
func Serve(ctx context.Context, cfg ServeConfig) error {
	cc := cfg.Connector
	log := cc.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
		cc.Logger = log
	}
	if cfg.EKSCluster != "" && cfg.Kubeconfig != "" {
		return errors.New("give --eks-cluster or --kubeconfig, not both")
	}
	cc.Token = TokenFile(cfg.TokenFile)
	if _, err := cc.Token(); err != nil {
		return fmt.Errorf("cannot read the connector token: %v; check --token-file", err)
	}
	pinned, err := auth.NewKeyFiles(auth.DefaultCheckInterval, cfg.GatewayKeyFiles...)
	if err != nil {
		return fmt.Errorf("--gateway-keys: %w", err)
	}
	cc.GatewayKeys = pinned
	if cfg.EKSCluster != "" {
		cc.Kube, err = eks.KubeConfig(ctx, cfg.EKSCluster, cfg.Region, cfg.EndpointURL)
	} else {
		cc.Kube, err = KubeConfig(cfg.Kubeconfig)
	}
	if err != nil {
		return err
	}
	if cc.TLSConfig, _, err = gatewaytls.Load(cfg.CAFile, cfg.Pins); err != nil {
		return err
	}
	reloads := []func() error{pinned.Reload}
	mon := auth.NewMonitor(log)
	mon.Watch("--gateway-keys", pinned.Check)
	rl, err := auth.LoadRevocationList(cfg.RevokedFile, "--revoked-tokens", mon)
	if err != nil {
		return err
	}
	if rl != nil {
		cc.Revoked, cc.RefreshRevoked = rl.Revoked, rl.Refresh
		reloads = append(reloads, rl.Reload)
	}
	if cfg.PolicyFile != "" {
		if cc.Ceiling, err = auth.LoadPolicy(cfg.PolicyFile); err != nil {
			return fmt.Errorf("--policy: %w", err)
		}
	}
	if cc.Name == "" {
		cc.Name, _ = os.Hostname()
	}
	if cfg.StateDir != "" {
		var created bool
		if cc.Key, created, err = LoadOrCreateKey(cfg.StateDir); err != nil {
			return fmt.Errorf("--state-dir: %w", err)
		}
		if created {
			log.Info("made a new connector key", "file", filepath.Join(cfg.StateDir, KeyFile))
		}
	}
	if cfg.AuditLog != "" {
		l, err := audit.OpenLog(cfg.AuditLog, cfg.AuditSigningKeyFile, audit.ComponentConnector)
		if err != nil {
			return err
		}
		defer l.Close() // last: once every request has written its record
		cc.Audit = l
	}
	c, err := New(cc)
	if err != nil {
		return err
	}
	var health *http.Server
	var hln net.Listener
	if cfg.HealthListen != "" {
		if hln, err = net.Listen("tcp", cfg.HealthListen); err != nil {
			return fmt.Errorf("cannot listen on --health-listen %s: %v", cfg.HealthListen, err)
		}
		health = &http.Server{Handler: c.HealthHandler(mon.Check), ReadHeaderTimeout: 5 * time.Second}
		log.Info("health probes listening", "addr", hln.Addr().String())
	}
	log.Info("connector starting", "gateway", cc.GatewayURL, "api_server", cc.Kube.Host, "version", cc.Version, "identity", c.Identity(),
		"gateway_keys", strings.Join(pinned.KeyIDs(), ","), "ceiling", cfg.PolicyFile, "impersonate", cc.Impersonate)

	// The group owns every server and loop; when the connector has stopped, the rest stop too.
	group, gctx := errgroup.WithContext(ctx)
	gctx, stop := context.WithCancel(gctx)
	defer stop()
	group.Go(func() error {
		defer stop()
		err := c.Run(gctx)
		log.Info("connector stopped")
		return err
	})
	if health != nil {
		group.Go(func() error {
			if err := health.Serve(hln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serving --health-listen stopped: %w", err)
			}
			return nil
		})
		group.Go(func() error {
			<-gctx.Done()
			return health.Close()
		})
	}
	group.Go(func() error { auth.ReloadOnHangup(gctx, log, reloads); return nil })
	group.Go(func() error { mon.Run(gctx, auth.DefaultCheckInterval); return nil })
	return group.Wait()
}
