// Package bootstrap installs the warren connector on machines nobody can reach from outside yet — the instances
// of a private VPC next to a private EKS endpoint — through AWS Systems Manager Run Command: SendCommand with the
// AWS-RunShellScript document runs a generated shell script on each instance, which downloads the connector binary
// from the gateway, checks its SHA-256, installs it, and runs it as the systemd service warren-connector. Run then
// follows GetCommandInvocation until every instance has finished, and WriteSummary reports per instance.
//
// The connector token. SSM keeps the parameters of a command (the script) and shows them to any principal allowed
// ssm:ListCommands in the account, for up to 30 days. By default the token is embedded in the script — never
// printed by it, so it appears in no command output or log — which is simple and needs nothing on the instance.
// Where that exposure is not acceptable, store the token as an SSM SecureString parameter and give its name
// (ScriptConfig.TokenParameter): the instance then reads it with the AWS CLI and its instance role, and no secret
// is sent in the command at all.
package bootstrap

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/warren-dev/warren/internal/download"
)

// ServiceName is the systemd service the script installs.
const ServiceName = "warren-connector"

// DefaultServiceUser is the system user the service runs as unless told otherwise.
const DefaultServiceUser = "warren"

// ScriptConfig describes the connector to install.
type ScriptConfig struct {
	// Gateway is the gateway's URL, https://HOST[:PORT]. The binary comes from Gateway/download/. Required.
	Gateway string
	// Token is the connector token (warren token connector), embedded in the script. Exactly one of Token and
	// TokenParameter is required.
	Token string
	// TokenParameter names an SSM parameter (SecureString) holding the token, read on the instance with
	// `aws ssm get-parameter --with-decryption` under the instance role.
	TokenParameter string
	// CAPEM is the CA that signed the gateway's certificate, for the download and the connector. Nil: system roots.
	CAPEM []byte
	// GatewayKeysPEM are the gateway's public keys (PEM "PUBLIC KEY" blocks: the signing.pub of its --gateway-key),
	// installed for the connector's --gateway-keys: it serves only requests the gateway signed an assertion of.
	// Required.
	GatewayKeysPEM []byte
	// Pins are SPKI pins (sha256:BASE64) of the gateway's certificate, for the connector; the script's download pins
	// the leaf's key with curl when there is no CAPEM.
	Pins []string
	// Proxy is an HTTP CONNECT proxy to reach the gateway, for the download and the connector.
	Proxy string
	// Kubeconfig is the path, on the instance, of the kubeconfig the connector uses. Exactly one of Kubeconfig and
	// EKSCluster is required.
	Kubeconfig string
	// EKSCluster is the EKS cluster the connector reaches with the instance role's credentials (--eks-cluster).
	EKSCluster string
	// EKSRegion is the region of EKSCluster. Default: the instance's own region (AWS_SSM_REGION_NAME).
	EKSRegion string
	// ConnectorArgs are more flags for `warren connector`, e.g. --policy=/etc/warren/policy.yaml.
	ConnectorArgs []string
	// ServiceUser is the system user the service runs as, created when missing; "" or "root" runs it as root.
	ServiceUser string
	// Digests are the expected SHA-256 (hex) of the binaries by platform (linux-amd64, ...), as fetched from the
	// gateway by the operator before sending: the instance then checks the download against them as well as
	// against what the gateway publishes next to it. Optional. They come from the gateway, so they catch a
	// download gone wrong, not a gateway that lies: for that, PinnedDigests or ReleaseKeyPEM.
	Digests map[string]string
	// PinnedDigests are SHA-256 (hex) of the binaries by platform that the operator computed from a release they
	// trust, independently of the gateway: the instance installs only a download with exactly that digest, and an
	// instance whose platform has no pin installs nothing. Works on any instance (sha256sum).
	PinnedDigests map[string]string
	// ReleaseKeyPEM is an Ed25519 public key (PKIX PEM: the signing.pub of a `warren keygen` release key) that
	// signed the binaries (`warren sign`): the instance fetches <binary>.sig from the gateway and installs only a
	// download whose signature verifies, with OpenSSL 1.1.1 or later (openssl, or openssl11 on Amazon Linux 2).
	// Where no such OpenSSL exists, a PinnedDigests entry for the platform is required and relied on instead;
	// without one the instance installs nothing.
	ReleaseKeyPEM []byte
	// ConnectWait is how long the script waits for the connector to log that it connected to the gateway; if it
	// has not by then, the script fails (the service stays installed and keeps retrying). 0: do not wait.
	ConnectWait time.Duration
	// Version is the version of warren that generated the script, shown in its header.
	Version string
}

var (
	// safeValue is what may go, unquoted, into the service's EnvironmentFile and ExecStart, which both systemd
	// and a POSIX shell read the same way: no quotes, blanks, $, backslash, %, ~, or shell operators.
	safeValue = regexp.MustCompile(`^[A-Za-z0-9_@+=:,./-]*$`)
	// tokenChars are a JWT's characters.
	tokenChars = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	hexDigest  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	userName   = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
)

// Validate checks the configuration, so that every value lands in the script, the environment file and the unit
// exactly as given.
func (c *ScriptConfig) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch {
	case c.Gateway == "":
		bad("the gateway URL is required")
	case !strings.HasPrefix(c.Gateway, "https://"):
		bad("the gateway URL %q must start with https://", c.Gateway)
	case !safeValue.MatchString(c.Gateway):
		bad("the gateway URL %q has characters that cannot be passed safely", c.Gateway)
	}
	switch {
	case (c.Token == "") == (c.TokenParameter == ""):
		bad("give exactly one of a connector token and the name of an SSM parameter holding it")
	case c.Token != "" && (!tokenChars.MatchString(c.Token) || strings.Count(c.Token, ".") != 2):
		bad("the connector token is not a JWT (letters, digits, '.', '-' and '_' only)")
	case c.TokenParameter != "" && !regexp.MustCompile(`^[A-Za-z0-9_./-]+$`).MatchString(c.TokenParameter):
		bad("the SSM parameter name %q is not valid", c.TokenParameter)
	}
	if (c.Kubeconfig == "") == (c.EKSCluster == "") {
		bad("give exactly one of a kubeconfig path on the instance and an EKS cluster name")
	}
	if c.Kubeconfig != "" && !strings.HasPrefix(c.Kubeconfig, "/") {
		bad("the kubeconfig path %q must be absolute (it is a path on the instance)", c.Kubeconfig)
	}
	for what, v := range map[string]string{"kubeconfig path": c.Kubeconfig, "EKS cluster": c.EKSCluster,
		"EKS region": c.EKSRegion, "proxy URL": c.Proxy} {
		if !safeValue.MatchString(v) {
			bad("the %s %q has characters that cannot be passed safely (quotes, blanks, $, %%, ~, ...)", what, v)
		}
	}
	for _, p := range c.Pins {
		if !strings.HasPrefix(p, "sha256:") || !safeValue.MatchString(p) {
			bad("pin %q is not sha256:BASE64", p)
		}
	}
	for _, a := range c.ConnectorArgs {
		if !strings.HasPrefix(a, "-") || !safeValue.MatchString(a) {
			bad("connector argument %q must be a flag (--name=value) without quotes, blanks, $, %%, ~", a)
		}
	}
	if c.ServiceUser != "" && c.ServiceUser != "root" && !userName.MatchString(c.ServiceUser) {
		bad("the service user %q is not a valid user name", c.ServiceUser)
	}
	for p, d := range c.Digests {
		if !hexDigest.MatchString(d) {
			bad("the expected SHA-256 of %s %q is not 64 hex digits", p, d)
		}
	}
	for p, d := range c.PinnedDigests {
		if !slices.Contains(download.Platforms, p) {
			bad("no connector is served for the pinned platform %q (known: %s)", p, strings.Join(download.Platforms, ", "))
		}
		if !hexDigest.MatchString(d) {
			bad("the pinned SHA-256 of %s %q is not 64 lowercase hex digits", p, d)
		}
	}
	if len(c.ReleaseKeyPEM) > 0 {
		if _, err := releaseKey(c.ReleaseKeyPEM); err != nil {
			bad("%v", err)
		}
	}
	if len(c.CAPEM) > 0 && (!strings.Contains(string(c.CAPEM), "-----BEGIN CERTIFICATE-----") || strings.Contains(string(c.CAPEM), heredocEnd)) {
		bad("the gateway CA is not a PEM certificate")
	}
	if k := string(c.GatewayKeysPEM); !strings.Contains(k, "-----BEGIN PUBLIC KEY-----") || strings.Contains(k, "PRIVATE KEY") || strings.Contains(k, heredocEnd) {
		bad("the gateway's public keys are required, as PEM \"PUBLIC KEY\" blocks (the signing.pub of the gateway's --gateway-key)")
	}
	return errors.Join(errs...)
}

const heredocEnd = "WARREN_EOF"

// releaseKey parses the release public key and returns it re-encoded, so that only a PEM block of our making goes
// into the script.
func releaseKey(pemBytes []byte) ([]byte, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil || block.Type != "PUBLIC KEY" || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New(`the release key is not one PEM "PUBLIC KEY" block (the signing.pub of warren keygen)`)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the release key: %v", err)
	}
	if _, ok := key.(ed25519.PublicKey); !ok {
		return nil, fmt.Errorf("the release key is a %T; want an Ed25519 key (warren keygen)", key)
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// shq quotes s for a POSIX shell.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Script returns the shell script for AWS-RunShellScript. It runs as root under /bin/sh, prints progress to stdout
// and errors (one "warren bootstrap: FAILED: ..." line last) to stderr, and never prints the token. The environment
// variables WARREN_PREFIX (a directory that all installed paths go under) and WARREN_SERVICE_USER override the
// installation root and the service user, for tests.
func Script(c ScriptConfig) (string, error) {
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	user := c.ServiceUser
	if user == "root" {
		user = ""
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...); b.WriteByte('\n') }
	version := c.Version
	if version == "" {
		version = "dev"
	}
	w("#!/bin/sh")
	w("# Installs the warren connector and runs it as the systemd service %s.", ServiceName)
	w("# Generated by `warren bootstrap ssm` (warren %s). It prints no secret; do not add `set -x`.", safeComment(version))
	w("set -eu")
	w("umask 077")
	w(`say() { echo "warren bootstrap: $*"; }`)
	w(`fail() { echo "warren bootstrap: FAILED: $*" >&2; exit 1; }`)
	w("")
	w("gateway=%s", shq(strings.TrimSuffix(c.Gateway, "/")))
	w(`prefix="${WARREN_PREFIX:-}"`)
	w(`service_user="${WARREN_SERVICE_USER-%s}"`, user)
	w(`bin="$prefix/usr/local/bin/warren"`)
	w(`etc="$prefix/etc/warren"`)
	w(`unit_dir="$prefix/etc/systemd/system"`)
	w("unit=%s", ServiceName)
	w("")
	w(`machine=$(uname -m)`)
	w(`case "$machine" in`)
	w(`  x86_64|amd64) platform=linux-amd64 ;;`)
	w(`  aarch64|arm64) platform=linux-arm64 ;;`)
	w(`  *) fail "unsupported architecture $machine: the gateway serves connectors for x86_64 (amd64) and aarch64 (arm64)" ;;`)
	w(`esac`)
	w(`name="warren-$platform"`)
	w(`want=""`)
	w(`case "$platform" in`)
	for _, p := range download.Platforms {
		if d := c.Digests[p]; d != "" {
			w(`  %s) want=%s ;;`, p, d)
		}
	}
	w(`  *) ;;`)
	w(`esac`)
	if len(c.PinnedDigests) > 0 {
		w(`# SHA-256 pinned by the operator (--connector-sha256), from a release they trust: not from the gateway.`)
		w(`pin=""`)
		w(`case "$platform" in`)
		for _, p := range download.Platforms {
			if d := c.PinnedDigests[p]; d != "" {
				w(`  %s) pin=%s ;;`, p, d)
			}
		}
		w(`  *) fail "no --connector-sha256 pin for $platform was given to warren bootstrap: nothing was installed" ;;`)
		w(`esac`)
	}
	w("")
	w(`command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is missing: install coreutils"`)
	w(`command -v systemctl >/dev/null 2>&1 || fail "systemctl is missing: this script installs a systemd service"`)
	w(`mkdir -p "$etc" "${bin%%/*}" "$unit_dir"`)
	w(`chmod 0755 "$etc"`)
	w(`tmp="$bin.download.$$"`)
	w(`trap 'rm -f "$tmp" "$tmp.sha256" "$tmp.sig" "$tmp.verify" "$etc/connector.token.new" "$etc/aws.err"' EXIT`)
	if c.Proxy != "" {
		w(`https_proxy=%s; HTTPS_PROXY=$https_proxy; export https_proxy HTTPS_PROXY`, shq(c.Proxy))
	}
	if len(c.CAPEM) > 0 {
		w(`cat >"$etc/gateway-ca.pem" <<'%s'`, heredocEnd)
		b.WriteString(strings.TrimSpace(string(c.CAPEM)) + "\n")
		w(heredocEnd)
		w(`chmod 0644 "$etc/gateway-ca.pem"`)
	}
	w(`cat >"$etc/gateway-keys.pem" <<'%s'`, heredocEnd)
	b.WriteString(strings.TrimSpace(string(c.GatewayKeysPEM)) + "\n")
	w(heredocEnd)
	w(`chmod 0644 "$etc/gateway-keys.pem"`)
	// The download. With a CA, curl or wget verifies the gateway against it; with pins only, curl pins the leaf's
	// key; otherwise the system roots. Either way the digest check below is what guarantees the binary.
	var curlTLS, wgetTLS string
	switch {
	case len(c.CAPEM) > 0:
		curlTLS, wgetTLS = `--cacert "$etc/gateway-ca.pem"`, `--ca-certificate="$etc/gateway-ca.pem"`
	case len(c.Pins) > 0:
		var curlPins []string
		for _, p := range c.Pins {
			curlPins = append(curlPins, "sha256//"+strings.TrimPrefix(p, "sha256:"))
		}
		curlTLS = "--insecure --pinnedpubkey " + shq(strings.Join(curlPins, ";"))
	}
	w(`fetch() {`)
	w(`  if command -v curl >/dev/null 2>&1; then`)
	w(`    curl --fail --silent --show-error --location --proto '=https' --retry 3 --connect-timeout 20 --max-time 900 %s --output "$2" "$1"`, curlTLS)
	if wgetTLS == "" && len(c.Pins) > 0 {
		w(`  else`)
		w(`    fail "curl is needed to download with a pinned gateway key (--pin): install curl, or bootstrap with --ca-file"`)
	} else {
		w(`  elif command -v wget >/dev/null 2>&1; then`)
		w(`    wget --quiet --tries=3 --timeout=20 --https-only %s --output-document="$2" "$1"`, wgetTLS)
		w(`  else`)
		w(`    fail "neither curl nor wget is installed: install one and run the bootstrap again"`)
	}
	w(`  fi`)
	w(`}`)
	w(`url="$gateway/download/$name"`)
	w(`say "downloading $url"`)
	w(`fetch "$url" "$tmp" || fail "cannot download $url: check that this instance reaches the gateway (security groups, NACLs, proxy)"`)
	w(`fetch "$url.sha256" "$tmp.sha256" || fail "cannot download $url.sha256"`)
	w(`published=$(cut -d ' ' -f 1 <"$tmp.sha256")`)
	w(`actual=$(sha256sum "$tmp" | cut -d ' ' -f 1)`)
	w(`[ "$actual" = "$published" ] || fail "SHA-256 mismatch for $name: the download has $actual, the gateway publishes $published; nothing was installed"`)
	w(`[ -z "$want" ] || [ "$actual" = "$want" ] || fail "SHA-256 mismatch for $name: the download has $actual, warren bootstrap expected $want; nothing was installed"`)
	w(`checked="SHA-256 $actual verified"`)
	if len(c.PinnedDigests) > 0 {
		w(`[ "$actual" = "$pin" ] || fail "SHA-256 mismatch for $name: the download has $actual, the operator pinned $pin (--connector-sha256); the gateway serves another binary than the release pinned; nothing was installed"`)
		w(`checked="SHA-256 $actual as pinned"`)
	}
	if len(c.ReleaseKeyPEM) > 0 {
		key, _ := releaseKey(c.ReleaseKeyPEM) // validated
		w(`cat >"$etc/release.pub" <<'%s'`, heredocEnd)
		b.WriteString(string(key))
		w(heredocEnd)
		w(`chmod 0644 "$etc/release.pub"`)
		w(`fetch "$url.sig" "$tmp.sig" || fail "cannot download $url.sig, the release signature of $name: sign it (warren sign --key RELEASE.key $name) and put $name.sig next to it in the gateway's --download-dir; nothing was installed"`)
		// Ed25519 in openssl pkeyutl -rawin needs OpenSSL 1.1.1; Amazon Linux 2 ships 1.0.2 as openssl and 1.1.1
		// as openssl11.
		w(`ossl=""; ossl_version=""`)
		w(`for o in openssl openssl11 openssl3; do`)
		w(`  v=$("$o" version 2>/dev/null) || continue`)
		w(`  [ -n "$ossl_version" ] || ossl_version=$v`)
		w(`  case "$v" in`)
		w(`    "OpenSSL 1.1.1"*|"OpenSSL "[3-9].*|"OpenSSL "[1-9][0-9].*) ossl=$o; ossl_version=$v; break ;;`)
		w(`  esac`)
		w(`done`)
		w(`if [ -n "$ossl" ]; then`)
		w(`  "$ossl" pkeyutl -verify -pubin -inkey "$etc/release.pub" -rawin -in "$tmp" -sigfile "$tmp.sig" >"$tmp.verify" 2>&1 || ` +
			`fail "the release signature of $name does not verify with the release key given to warren bootstrap (--release-key): the gateway serves a binary the release key did not sign; nothing was installed"`)
		w(`  checked="$checked, release signature verified ($ossl_version)"`)
		w(`elif [ -n "${pin:-}" ]; then`)
		w(`  say "cannot check the release signature here (${ossl_version:-no openssl}: Ed25519 needs OpenSSL 1.1.1 or later); relying on the --connector-sha256 pin, which matched"`)
		w(`  checked="$checked, release signature not checked (no OpenSSL 1.1.1)"`)
		w(`else`)
		w(`  fail "the release signature needs OpenSSL 1.1.1 or later for Ed25519, and this instance has ${ossl_version:-no openssl} (Amazon Linux 2 ships 1.0.2: install openssl11); or pin the binary with --connector-sha256; nothing was installed"`)
		w(`fi`)
	}
	w(`chmod 0755 "$tmp"`)
	w(`version=$("$tmp" version 2>&1) || fail "the downloaded $name does not run on this instance: $version"`)
	w(`mv -f "$tmp" "$bin"`)
	w(`say "installed $bin ($name, warren $version, $checked)"`)
	w("")
	w(`if [ -n "$service_user" ] && ! id -u "$service_user" >/dev/null 2>&1; then`)
	w(`  if command -v useradd >/dev/null 2>&1; then`)
	w(`    useradd --system --no-create-home --home-dir /nonexistent --shell /sbin/nologin "$service_user" || fail "cannot create the service user $service_user"`)
	w(`  elif command -v adduser >/dev/null 2>&1; then`)
	w(`    adduser -S -H -s /sbin/nologin "$service_user" || fail "cannot create the service user $service_user"`)
	w(`  else`)
	w(`    fail "cannot create the service user $service_user (no useradd): create it, or bootstrap with --service-user root"`)
	w(`  fi`)
	w(`  say "created the system user $service_user"`)
	w(`fi`)
	if c.Token != "" {
		w(`cat >"$etc/connector.token.new" <<'%s'`, heredocEnd)
		w("%s", c.Token)
		w(heredocEnd)
	} else {
		region := `${AWS_SSM_REGION_NAME:-}`
		w(`command -v aws >/dev/null 2>&1 || fail "the AWS CLI is needed to read the connector token from SSM parameter %s: install it"`, c.TokenParameter)
		w(`aws ssm get-parameter --region "%s" --name %s --with-decryption --query Parameter.Value --output text >"$etc/connector.token.new" 2>"$etc/aws.err" || `+
			`fail "cannot read SSM parameter %s: $(tail -n 3 "$etc/aws.err"); the instance role needs ssm:GetParameter on it and kms:Decrypt on its key"`,
			region, shq(c.TokenParameter), c.TokenParameter)
		w(`[ -s "$etc/connector.token.new" ] || fail "SSM parameter %s is empty"`, c.TokenParameter)
	}
	w(`chmod 0600 "$etc/connector.token.new"`)
	w(`[ -z "$service_user" ] || chown "$service_user" "$etc/connector.token.new"`)
	w(`mv -f "$etc/connector.token.new" "$etc/connector.token"`)
	w(`say "wrote the connector token to $etc/connector.token (mode 0600)"`)
	// The connector's key lives here, so that a restarted service keeps its identity at the gateway.
	w(`state="$prefix/var/lib/warren-connector"`)
	w(`mkdir -p "$state" && chmod 0700 "$state" || fail "cannot create the connector's state directory $state"`)
	w(`[ -z "$service_user" ] || chown "$service_user" "$state" || fail "cannot give $state to $service_user"`)
	if c.Kubeconfig != "" {
		w(`kubeconfig=%s`, shq(c.Kubeconfig))
		w(`[ -r "$kubeconfig" ] || fail "the kubeconfig $kubeconfig is missing on this instance"`)
		w(`if [ -n "$service_user" ] && command -v runuser >/dev/null 2>&1 && ! runuser -u "$service_user" -- test -r "$kubeconfig"; then`)
		w(`  fail "the service user $service_user cannot read $kubeconfig: make it readable to that user, or bootstrap with --service-user root"`)
		w(`fi`)
	}
	w("")
	w(`{`)
	w(`  echo "# warren connector settings, written by warren bootstrap ssm; see warren connector --help"`)
	w(`  echo "WARREN_GATEWAY=$gateway"`)
	w(`  echo "WARREN_TOKEN_FILE=$etc/connector.token"`)
	w(`  echo "WARREN_STATE_DIR=$state"`)
	w(`  echo "WARREN_GATEWAY_KEYS=$etc/gateway-keys.pem"`)
	if len(c.CAPEM) > 0 {
		w(`  echo "WARREN_CA_FILE=$etc/gateway-ca.pem"`)
	}
	if len(c.Pins) > 0 {
		w(`  echo "WARREN_PIN=%s"`, strings.Join(c.Pins, ","))
	}
	if c.Proxy != "" {
		w(`  echo "WARREN_PROXY=%s"`, c.Proxy)
	}
	if c.Kubeconfig != "" {
		w(`  echo "WARREN_KUBECONFIG=$kubeconfig"`)
	} else {
		region := c.EKSRegion
		if region == "" {
			region = "${AWS_SSM_REGION_NAME:-}"
		}
		w(`  echo "WARREN_EKS_CLUSTER=%s"`, c.EKSCluster)
		w(`  echo "WARREN_REGION=%s"`, region)
	}
	w(`  echo "WARREN_NAME=${AWS_SSM_INSTANCE_ID:-$(uname -n)}"`)
	w(`} >"$etc/connector.env"`)
	w(`chmod 0644 "$etc/connector.env"`)
	if c.EKSCluster != "" && c.EKSRegion == "" {
		w(`grep -q '^WARREN_REGION=.' "$etc/connector.env" || fail "the instance's region is unknown: bootstrap with --eks-region"`)
	}
	w("")
	w(`cat >"$unit_dir/$unit.service" <<%s`, heredocEnd)
	w(`[Unit]`)
	w(`Description=warren connector: outbound tunnel to the warren gateway`)
	w(`Wants=network-online.target`)
	w(`After=network-online.target`)
	w(``)
	w(`[Service]`)
	w(`Type=simple`)
	w(`EnvironmentFile=$etc/connector.env`)
	w(`ExecStart=$bin connector%s`, joinArgs(c.ConnectorArgs))
	w(`Restart=always`)
	w(`RestartSec=5`)
	w(`$(if [ -n "$service_user" ]; then echo "User=$service_user"; fi)`)
	w(`NoNewPrivileges=yes`)
	w(`PrivateTmp=yes`)
	w(`ProtectSystem=full`)
	w(`ProtectHome=read-only`)
	w(``)
	w(`[Install]`)
	w(`WantedBy=multi-user.target`)
	w(heredocEnd)
	w(`chmod 0644 "$unit_dir/$unit.service"`)
	w("")
	w(`since=$(date '+%%Y-%%m-%%d %%H:%%M:%%S')`)
	w(`systemctl daemon-reload`)
	w(`if systemctl is-active --quiet "$unit"; then`)
	w(`  systemctl restart "$unit" || fail "systemctl restart $unit failed"`)
	w(`  say "restarted $unit with the new binary and settings"`)
	w(`else`)
	w(`  systemctl enable --now "$unit" || fail "systemctl enable --now $unit failed"`)
	w(`  say "enabled and started $unit"`)
	w(`fi`)
	wait := int(c.ConnectWait.Round(time.Second) / time.Second)
	if wait <= 0 {
		w(`say "$unit is installed; not waiting for it to connect"`)
		return b.String(), nil
	}
	w(`logs() { journalctl -u "$unit" --since "$since" -n 20 -o cat --no-pager 2>/dev/null || true; }`)
	w(`if ! command -v journalctl >/dev/null 2>&1; then`)
	w(`  say "$unit started; cannot check that it connected (no journalctl)"`)
	w(`  exit 0`)
	w(`fi`)
	w(`i=0`)
	w(`while :; do`)
	w(`  if logs | grep -q -e 'msg="connected to the gateway"' -e '"msg":"connected to the gateway"'; then`)
	w(`    say "$unit is running and connected to $gateway"`)
	w(`    exit 0`)
	w(`  fi`)
	w(`  if ! systemctl is-active --quiet "$unit"; then`)
	w(`    logs >&2`)
	w(`    fail "$unit is not running; its last log lines precede this one"`)
	w(`  fi`)
	w(`  [ $i -lt %d ] || break`, wait)
	w(`  sleep 1`)
	w(`  i=$((i+1))`)
	w(`done`)
	w(`logs >&2`)
	w(`fail "$unit runs but has not connected to $gateway within %ds (its last log lines precede this one); it keeps retrying"`, wait)
	return b.String(), nil
}

func joinArgs(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return " " + strings.Join(args, " ")
}

func safeComment(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
