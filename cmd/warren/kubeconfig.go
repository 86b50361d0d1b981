package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const kubeconfigUsage = `usage: warren kubeconfig --gateway https://HOST:PORT --cluster C [--ca-file F] (--token T | --token-command CMD) [--out F]

Prints (or writes to --out) a kubeconfig for kubectl and client-go that reaches cluster C through the gateway.
With --token-command, kubectl runs "warren credential --token-command CMD" as an exec credential plugin whenever it
needs a token: CMD prints a caller JWT, and kubectl asks again when that token expires.

`

func runKubeconfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren kubeconfig", flag.ContinueOnError)
	fs.SetOutput(stderr)
	gatewayURL := fs.String("gateway", "", "the gateway's URL, https://HOST:PORT")
	cluster := fs.String("cluster", "", "the cluster to reach")
	caFile := fs.String("ca-file", "", "CA certificate (PEM) of the gateway, embedded in the kubeconfig; default: system roots")
	token := fs.String("token", "", "a caller token (static: kubectl fails once it expires)")
	tokenCommand := fs.String("token-command", "", "a shell command that prints a fresh caller token")
	out := fs.String("out", "", "write the kubeconfig to this file (mode 0600) instead of standard output")
	fs.Usage = func() { fmt.Fprint(fs.Output(), kubeconfigUsage); fs.PrintDefaults() }
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *gatewayURL == "":
		return errors.New("missing --gateway: the gateway's URL, e.g. --gateway https://gateway.example.com")
	case *cluster == "":
		return errors.New("missing --cluster: the name of the cluster to reach")
	case (*token == "") == (*tokenCommand == ""):
		return errors.New("give exactly one of --token (a caller token) and --token-command (a command printing one)")
	}
	c := clientcmdapi.NewCluster()
	c.Server = strings.TrimSuffix(*gatewayURL, "/") + "/clusters/" + *cluster
	if *caFile != "" {
		ca, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("cannot read --ca-file: %v", err)
		}
		c.CertificateAuthorityData = ca
	}
	user := clientcmdapi.NewAuthInfo()
	if *token != "" {
		user.Token = *token
	} else {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("cannot find the warren binary for the credential plugin: %v", err)
		}
		self, _ = filepath.Abs(self)
		user.Exec = &clientcmdapi.ExecConfig{
			APIVersion:      "client.authentication.k8s.io/v1",
			Command:         self,
			Args:            []string{"credential", "--token-command", *tokenCommand},
			InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
		}
	}
	name := "warren-" + *cluster
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = c
	cfg.AuthInfos[name] = user
	ctx := clientcmdapi.NewContext()
	ctx.Cluster, ctx.AuthInfo = name, name
	cfg.Contexts[name] = ctx
	cfg.CurrentContext = name
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = stdout.Write(data)
		return err
	}
	if err := os.WriteFile(*out, data, 0o600); err != nil {
		return fmt.Errorf("cannot write --out: %v", err)
	}
	return nil
}

// runCredential is the exec credential plugin behind `warren kubeconfig --token-command`: it runs the command,
// and hands kubectl the token with its expiry, so that kubectl asks again only when the token has expired.
func runCredential(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren credential", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tokenCommand := fs.String("token-command", "", "a shell command that prints a caller token")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *tokenCommand == "" {
		return errors.New("missing --token-command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", *tokenCommand)
	cmd.Stderr = os.Stderr
	raw, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("token command %q failed: %v", *tokenCommand, err)
	}
	token := strings.TrimSpace(string(raw))
	if token == "" {
		return fmt.Errorf("token command %q printed nothing", *tokenCommand)
	}
	status := map[string]any{"token": token}
	// The expiry is read, not verified: the gateway verifies; kubectl only needs to know when to ask again.
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err == nil && claims.ExpiresAt != nil {
		status["expirationTimestamp"] = claims.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return json.NewEncoder(stdout).Encode(map[string]any{
		"apiVersion": "client.authentication.k8s.io/v1",
		"kind":       "ExecCredential",
		"spec":       map[string]any{"interactive": false},
		"status":     status,
	})
}
