package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/volume"
)

// refusal runs Validate of a new command's options on args; it returns Validate's error.
type refusal func(t *testing.T, args []string) error

func refuses[C any](newOptions func() options[C]) refusal {
	return func(t *testing.T, args []string) error {
		_, err := validate(t, newOptions(), args...)
		return err
	}
}

// TestToolOptionsValidate: the tools' flag combinations that cannot run are refused by Validate, in-process, with
// the line and exit status the binary gives (1, or 2 with the pointer to --help for usage errors), before any file is
// read or any cluster reached.
func TestToolOptionsValidate(t *testing.T) {
	tokenIssue := []string{"--key", "k", "--subject", "alice", "--cluster", "prod", "--rule", "get:pods"}
	acquireArgs := []string{"p", "--out", "d", "--signing-key", "k", "--gateway", "https://gw", "--cluster", "c", "--token", "t"}
	exportArgs := []string{"--root", "/mnt", "--container", "web", "--out", "d", "--signing-key", "k"}
	for _, c := range []struct {
		name     string
		cmd      []string
		validate refusal
		args     []string
		code     int
		want     string
	}{
		{"keygen: no directory", []string{"keygen"}, refuses(func() options[string] { return &KeygenOptions{} }), nil, 1,
			"keygen: missing --out: the directory for the key pair, e.g. warren keygen --out ./keys"},
		{"sign: no key", []string{"sign"}, refuses(func() options[signRun] { return &SignOptions{} }), []string{"f"}, 1,
			"missing --key: the release signing key (warren keygen --out DIR writes DIR/signing.key)"},
		{"sign: nothing to sign", []string{"sign"}, refuses(func() options[signRun] { return &SignOptions{} }), []string{"--key", "k"}, 1,
			"nothing to sign: give the files, e.g. warren sign --key release/signing.key dist/warren-linux-amd64"},
		{"sign: the key after the files is a file", []string{"sign"}, refuses(func() options[signRun] { return &SignOptions{} }), []string{"f", "--key", "k"}, 1,
			"missing --key: the release signing key"},
		{"token issue: a namespace without a preset", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), append(tokenIssue, "--namespace", "p"), 2,
			"token issue: --namespace goes with --preset, e.g. --preset acquire --namespace payments"},
		{"token issue: an unknown preset", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), []string{"--preset", "acquire,admin", "--namespace", "p"}, 2,
			`token issue: --preset acquire,admin: unknown preset "admin": want `},
		{"token issue: print nothing", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), []string{"--print-rules"}, 2,
			"token issue: --print-rules needs --rule or --preset"},
		{"token issue: print a bad rule", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), []string{"--print-rules", "--rule", "get"}, 1, "token issue: "},
		{"token issue: no key", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), tokenIssue[2:], 1,
			"token issue: missing --key: the signing key file; e.g. warren token issue --key signing.key --subject alice --cluster prod --rule get,list:pods"},
		{"token issue: no subject", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), []string{"--key", "k", "--cluster", "prod", "--rule", "get:pods"}, 1,
			"token issue: missing --subject: who the token is for; e.g. "},
		{"token issue: no cluster", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), []string{"--key", "k", "--subject", "a", "--rule", "get:pods"}, 1,
			"token issue: missing --cluster: the cluster the token may reach; e.g. "},
		{"token issue: no rule", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), tokenIssue[:6], 1,
			"token issue: missing --rule (or --preset): what the token may do; e.g. "},
		{"token issue: no lifetime", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), append(tokenIssue, "--ttl", "0s"), 1,
			"token issue: --ttl must be positive, e.g. --ttl 15m"},
		{"token issue: two clusters in one flag", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), append(tokenIssue, "--cluster", "a,b"), 1,
			"token issue: 3 clusters given (prod, a, b): a token for several clusters works at each of them"},
		{"token issue: a bad rule", []string{"token", "issue"}, refuses(NewTokenIssueOptionsAny), append(tokenIssue, "--rule", "get"), 1, "token issue: "},
		{"token connector: no key", []string{"token", "connector"}, refuses(NewTokenConnectorOptionsAny), []string{"--cluster", "prod"}, 1,
			"token connector: missing --key: the signing key file; e.g. warren token connector --key signing.key --cluster prod"},
		{"token connector: no cluster", []string{"token", "connector"}, refuses(NewTokenConnectorOptionsAny), []string{"--key", "k"}, 1,
			"token connector: missing --cluster: the connector's cluster; e.g. warren token connector --key signing.key --cluster prod"},
		{"token connector: no lifetime", []string{"token", "connector"}, refuses(NewTokenConnectorOptionsAny), []string{"--key", "k", "--cluster", "c", "--ttl", "-1h"}, 1,
			"token connector: --ttl must be positive, e.g. --ttl 8760h"},
		{"kubeconfig: no gateway", []string{"kubeconfig"}, refuses(func() options[kubeconfigRun] { return &KubeconfigOptions{} }), []string{"--cluster", "c", "--token", "t"}, 1,
			"missing --gateway: the gateway's URL, e.g. --gateway https://gateway.example.com (or give --kubeconfig)"},
		{"kubeconfig: two tokens", []string{"kubeconfig"}, refuses(func() options[kubeconfigRun] { return &KubeconfigOptions{} }),
			[]string{"--gateway", "https://gw", "--cluster", "c", "--token", "t", "--token-command", "echo t"}, 1,
			"give exactly one of --token (a caller token), --token-file (a file holding one) and --token-command (a command printing one)"},
		{"kubeconfig: a gateway that is not https", []string{"kubeconfig"}, refuses(func() options[kubeconfigRun] { return &KubeconfigOptions{} }),
			[]string{"--gateway", "ftp://gw", "--cluster", "c", "--token", "t"}, 1, `--gateway "ftp://gw" is not of the form https://HOST[:PORT]`},
		{"kubeconfig: a cluster with a slash", []string{"kubeconfig"}, refuses(func() options[kubeconfigRun] { return &KubeconfigOptions{} }),
			[]string{"--gateway", "https://gw", "--cluster", "a/../b", "--token", "t"}, 1, `--cluster "a/../b" is not a cluster name`},
		{"credential: no command", []string{"credential"}, refuses(func() options[string] { return &CredentialOptions{} }), nil, 1, "missing --token-command"},
		{"audit verify: no file", []string{"audit", "verify"}, refuses(func() options[auditVerify] { return &AuditVerifyOptions{} }), []string{"--key", "k"}, 1,
			"audit verify: want exactly one FILE, e.g. warren audit verify /var/log/warren/audit.log"},
		{"audit verify: two files", []string{"audit", "verify"}, refuses(func() options[auditVerify] { return &AuditVerifyOptions{} }), []string{"a", "--key", "k", "b"}, 1,
			"audit verify: want exactly one FILE"},
		{"audit verify: an empty file name", []string{"audit", "verify"}, refuses(func() options[auditVerify] { return &AuditVerifyOptions{} }), []string{""}, 1,
			"audit verify: want exactly one FILE"},
		{"acquire: no output", []string{"acquire"}, refuses(NewAcquireOptionsAny), []string{"p", "--signing-key", "k"}, 2,
			"missing --out: the output directory, e.g. --out ./case-42, or s3://BUCKET/PREFIX"},
		{"acquire: no signing key", []string{"acquire"}, refuses(NewAcquireOptionsAny), []string{"p", "--out", "d"}, 2,
			"missing --signing-key: the examiner's key (warren keygen --out DIR writes DIR/signing.key)"},
		{"acquire: a size that is not one", []string{"acquire"}, refuses(NewAcquireOptionsAny), append(acquireArgs, "--max-bytes", "lots"), 2,
			`--max-bytes "lots": want a byte count such as 1073741824, 500Mi or 2Gi`},
		{"acquire: an unknown mode to allow", []string{"acquire"}, refuses(NewAcquireOptionsAny), append(acquireArgs, "--allow-modes", "exec,debug"), 2,
			`--allow-modes "exec,debug": unknown mode "debug" (want exec, ephemeral, node)`},
		{"acquire: auto is not a mode to allow", []string{"acquire"}, refuses(NewAcquireOptionsAny), append(acquireArgs, "--allow-modes", "auto"), 2,
			`--allow-modes "auto": unknown mode "auto" (want exec, ephemeral, node)`},
		{"acquire: an unknown node layout", []string{"acquire"}, refuses(NewAcquireOptionsAny), append(acquireArgs, "--node-layout", "crio"), 2,
			`--node-layout "crio": want containerd, k3s, rke2 or bottlerocket`},
		{"acquire: a redaction that is no expression", []string{"acquire"}, refuses(NewAcquireOptionsAny), append(acquireArgs, "--redact-env", "KEY("), 2,
			`--redact-env "KEY(": error parsing regexp: missing closing ): ` + "`(?i)KEY(`"},
		{"acquire: a kubeconfig and a gateway", []string{"acquire"}, refuses(NewAcquireOptionsAny), append(acquireArgs, "--kubeconfig", "kc"), 2,
			"give either --kubeconfig (with --context) or --gateway, --cluster and a token, not both"},
		{"acquire: a context without a kubeconfig", []string{"acquire"}, refuses(NewAcquireOptionsAny), append(acquireArgs, "--context", "prod"), 2,
			"--context needs --kubeconfig"},
		{"acquire: a pin that is not one", []string{"acquire"}, refuses(NewAcquireOptionsAny), append(acquireArgs, "--pin", "md5:x"), 2, "--pin: "},
		{"acquire: a bad log level", []string{"acquire"}, refuses(NewAcquireOptionsAny), append(acquireArgs, "--log-level", "loud"), 1,
			`invalid --log-level "loud": want debug, info, warn or error`},
		{"acquire verify: no directory", []string{"acquire", "verify"}, refuses(func() options[acquire.VerifyConfig] { return &AcquireVerifyOptions{} }), []string{"--key", "k"}, 2,
			"give one DIR (or s3://BUCKET/PREFIX) to verify, e.g. warren acquire verify ./case-42 --key keys/signing.pub"},
		{"acquire verify: two directories", []string{"acquire", "verify"}, refuses(func() options[acquire.VerifyConfig] { return &AcquireVerifyOptions{} }), []string{"a", "--key", "k", "b"}, 2,
			"give one DIR (or s3://BUCKET/PREFIX) to verify"},
		{"acquire verify: no key", []string{"acquire", "verify"}, refuses(func() options[acquire.VerifyConfig] { return &AcquireVerifyOptions{} }), []string{"d"}, 2,
			"missing --key: the examiner's public key (signing.pub from warren keygen)"},
		{"acquire volume: an argument", []string{"acquire", "volume"}, refuses(NewVolumeOptionsAny), append(exportArgs, "web"), 2,
			`unexpected argument "web": give the container with --container ID`},
		{"acquire volume: no root", []string{"acquire", "volume"}, refuses(NewVolumeOptionsAny), []string{"--list"}, 2,
			"missing --root: the directory where the node's volume is mounted, e.g. --root /mnt/node"},
		{"acquire volume: list and export", []string{"acquire", "volume"}, refuses(NewVolumeOptionsAny), append(exportArgs, "--list"), 2, "give --list or --container, not both"},
		{"acquire volume: no container", []string{"acquire", "volume"}, refuses(NewVolumeOptionsAny), []string{"--root", "/mnt"}, 2,
			"missing --container ID (or --list to see the containers)"},
		{"acquire volume: an unknown listing format", []string{"acquire", "volume"}, refuses(NewVolumeOptionsAny), []string{"--root", "/mnt", "--list", "-o", "yaml"}, 2,
			`-o "yaml": want table or json`},
		{"acquire volume: no output", []string{"acquire", "volume"}, refuses(NewVolumeOptionsAny), exportArgs[:4], 2, "missing --out: the output directory, e.g. --out ./case-42"},
		{"acquire volume: object storage", []string{"acquire", "volume"}, refuses(NewVolumeOptionsAny), append(exportArgs, "--out", "s3://b/p"), 2,
			"--out s3:// is not available in this build: give a local directory"},
		{"acquire volume: no signing key", []string{"acquire", "volume"}, refuses(NewVolumeOptionsAny), exportArgs[:6], 2,
			"missing --signing-key: the examiner's key (warren keygen --out DIR writes DIR/signing.key)"},
		{"acquire volume: a redaction that is no expression", []string{"acquire", "volume"}, refuses(NewVolumeOptionsAny), append(exportArgs, "--redact-env", "["), 2,
			`--redact-env "[": error parsing regexp: missing closing ]: ` + "`[`"},
		{"acquire volume: a bad log format", []string{"acquire", "volume"}, refuses(NewVolumeOptionsAny), append(exportArgs, "--log-format", "xml"), 1,
			`invalid --log-format "xml": want text or json`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.validate(t, c.args)
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("Validate: %v\nwant %s", err, c.want)
			}
			want := "warren " + c.cmd[0] + ": " + err.Error()
			if c.code == 2 {
				want += "; run `warren " + c.cmd[0] + " --help` for the flags"
			}
			code, stdout, stderr := runCmd(t, append(c.cmd, c.args...)...)
			if code != c.code || stderr != want+"\n" || stdout != "" {
				t.Errorf("warren %s: exit %d %q %q\nwant exit %d %q", strings.Join(c.cmd, " "), code, stdout, stderr, c.code, want+"\n")
			}
		})
	}
}

// The constructors as options[C], for refuses.
func NewTokenIssueOptionsAny() options[tokenIssue]         { return NewTokenIssueOptions() }
func NewTokenConnectorOptionsAny() options[tokenConnector] { return NewTokenConnectorOptions() }
func NewAcquireOptionsAny() options[acquire.RunConfig]     { return NewAcquireOptions() }
func NewVolumeOptionsAny() options[volumeRun]              { return NewVolumeOptions() }

// TestTokenOptionsDefaults: token issue's and token connector's flags take auth's and acquire's defaults, and what
// is given reaches the token's options.
func TestTokenOptionsDefaults(t *testing.T) {
	r, err := validate(t, NewTokenIssueOptions(), "--key", "k", "--subject", "alice", "--cluster", "prod, staging", "--cluster", "dev", "--multi-cluster",
		"--rule", "get,list:pods", "--group", "ir, oncall", "--preset", "acquire-node", "--namespace", "payments")
	if err != nil {
		t.Fatal(err)
	}
	d := auth.DefaultIssueOptions()
	o := r.opts
	if o.TTL != d.TTL || o.Issuer != d.Issuer || o.Subject != "alice" || !o.MultiCluster || r.keyFile != "k" || r.printRules ||
		!reflect.DeepEqual(o.Clusters, []string{"prod", "staging", "dev"}) || !reflect.DeepEqual(o.Groups, []string{"ir", "oncall"}) ||
		len(o.Rules) != len(r.rules) || r.rules[0] != "get,list:pods" {
		t.Errorf("token issue: %+v", r)
	}
	// The node preset's rules name the collector namespace, acquire's default.
	collectorNS := acquire.DefaultConfig().CollectorNamespace
	if !strings.Contains(strings.Join(r.rules, " "), "create,get,delete:pods:"+collectorNS) {
		t.Errorf("preset rules %q do not name %s", r.rules, collectorNS)
	}
	j, err := validate(t, NewTokenConnectorOptions(), "--key", "k", "--cluster", "prod")
	if err != nil || j != (tokenConnector{keyFile: "k", cluster: "prod", ttl: auth.MaxConnectorTokenLifetime}) {
		t.Errorf("token connector: %+v %v", j, err)
	}
}

// TestToolOptionsDefaults: what keygen, sign, kubeconfig, credential and audit verify are given reaches what they run.
func TestToolOptionsDefaults(t *testing.T) {
	if dir, err := validate(t, &KeygenOptions{}, "--out", "keys"); dir != "keys" || err != nil {
		t.Errorf("keygen: %q %v", dir, err)
	}
	if r, err := validate(t, &SignOptions{}, "--key", "k", "a", "--b"); err != nil || r.keyFile != "k" || !reflect.DeepEqual(r.files, []string{"a", "--b"}) {
		t.Errorf("sign: %+v %v", r, err)
	}
	k, err := validate(t, &KubeconfigOptions{}, "--gateway", "https://gw", "--cluster", "c", "--token-file", "/t", "--ca-file", "ca", "--out", "kc")
	if err != nil || k.out != "kc" || k.warren != "" || k.client.TokenFile != "/t" || k.client.CAFile != "ca" {
		t.Errorf("kubeconfig: %+v %v", k, err)
	}
	// With a token command the kubeconfig runs this binary, by its absolute path.
	if k, err := validate(t, &KubeconfigOptions{}, "--gateway", "https://gw", "--cluster", "c", "--token-command", "echo t"); err != nil || !strings.HasPrefix(k.warren, "/") {
		t.Errorf("kubeconfig --token-command: %+v %v", k, err)
	}
	if cmd, err := validate(t, &CredentialOptions{}, "--token-command", "echo t"); cmd != "echo t" || err != nil {
		t.Errorf("credential: %q %v", cmd, err)
	}
	for _, c := range []struct {
		args []string
		want auditVerify
	}{
		{[]string{"log"}, auditVerify{file: "log"}},
		{[]string{"--key", "a.pub,b.pub", "log"}, auditVerify{file: "log", keyFiles: []string{"a.pub", "b.pub"}}},
		{[]string{"log", "--key", ","}, auditVerify{file: "log", keyFiles: []string{}}}, // a --key naming no file fails to load, not skipped
	} {
		if r, err := validate(t, &AuditVerifyOptions{}, c.args...); err != nil || !reflect.DeepEqual(r, c.want) {
			t.Errorf("audit verify %q: %+v %v, want %+v", c.args, r, err, c.want)
		}
	}
}

// emptyPin is a well-formed SPKI pin (the SHA-256 of nothing).
const emptyPin = "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

// TestAcquireOptionsDefaults: acquire's flags take acquire.DefaultConfig's values, consent follows --allow-modes and
// --mode, and what is given reaches the run's config.
func TestAcquireOptionsDefaults(t *testing.T) {
	rc, err := validate(t, NewAcquireOptions(), "api-1", "-n", "payments", "web/main", "--out", "case", "--signing-key", "k",
		"--gateway", "https://gw", "--cluster", "prod", "--token", "t", "--collector-dir", "/opt/warren", "--pin", emptyPin)
	if err != nil {
		t.Fatal(err)
	}
	c, d := rc.Config, acquire.DefaultConfig()
	for name, eq := range map[string]bool{
		"namespace":                 c.Namespace == "payments",
		"pods":                      reflect.DeepEqual(c.Pods, []string{"api-1", "web/main"}),
		"profile":                   c.Profile == d.Profile,
		"mode":                      c.Mode == d.Mode,
		"allow-modes":               reflect.DeepEqual(c.AllowModes, d.AllowModes),
		"no consent":                c.Consented == nil && c.ConsentedBy == "",
		"collector-image":           c.CollectorImage == d.CollectorImage,
		"collector-namespace":       c.CollectorNamespace == d.CollectorNamespace,
		"node dirs":                 c.NodeRuntimeDir == "" && c.NodeContainerdRoot == "", // Run applies the default layout
		"node-containerd-namespace": c.NodeContainerdNamespace == d.NodeContainerdNamespace,
		"start-timeout":             c.StartTimeout == d.StartTimeout,
		"method":                    c.Method == d.Method,
		"max-bytes":                 c.MaxBytes == d.MaxBytes,
		"time-budget":               c.TimeBudget == d.TimeBudget,
		"parallel":                  c.Parallel == d.Parallel,
		"exec-protocol":             c.ExecProtocol == d.ExecProtocol,
		"collector-dir":             c.CollectorDir == "/opt/warren",
		"logger":                    c.Logger != nil && rc.Output.Logger == c.Logger,
		"version":                   c.Version == version,
		"output":                    rc.Output.Dest == "case",
		"signing-key":               rc.SigningKeyFile == "k",
		"client": rc.Client.Gateway == "https://gw" && rc.Client.Cluster == "prod" && rc.Client.Token == "t" && rc.Client.UserAgent == "warren-acquire/"+version &&
			reflect.DeepEqual(rc.Client.Pins, []string{emptyPin}),
	} {
		if !eq {
			t.Errorf("%s: not the library's default or not what was given: %+v", name, rc)
		}
	}
	rc, err = validate(t, NewAcquireOptions(), "--out", "case", "--signing-key", "k", "--kubeconfig", "kc", "--all", "--allow-modes", "exec, node",
		"--mode", "ephemeral", "--node-layout", "k3s", "--node-containerd-root", "/data/containerd", "--max-bytes", "2Gi", "--redact-env", "^TOKEN$",
	)
	if err != nil {
		t.Fatal(err)
	}
	c = rc.Config
	if !reflect.DeepEqual(c.Consented, []string{"exec", "node", "ephemeral"}) || c.ConsentedBy != "--mode ephemeral" || c.MaxBytes != 2<<30 ||
		c.NodeRuntimeDir != acquire.NodeLayouts["k3s"].RuntimeDir || c.NodeContainerdRoot != "/data/containerd" || len(c.RedactEnv) != 1 ||
		!c.RedactEnv[0].MatchString("token") || !c.All || rc.Client.Kubeconfig != "kc" {
		t.Errorf("acquire config: %+v", rc)
	}
	v, err := validate(t, &AcquireVerifyOptions{}, "--key", "a.pub, b.pub", "s3://b/p", "--s3-region", "eu-west-1", "--s3-path-style")
	if err != nil || v.Output.Dest != "s3://b/p" || !reflect.DeepEqual(v.KeyFiles, []string{"a.pub", "b.pub"}) || v.Output.S3Region != "eu-west-1" || !v.Output.S3PathStyle {
		t.Errorf("acquire verify: %+v %v", v, err)
	}
}

// TestVolumeOptionsDefaults: acquire volume's flags take volume.DefaultConfig's values and reach the listing or the
// export.
func TestVolumeOptionsDefaults(t *testing.T) {
	r, err := validate(t, NewVolumeOptions(), "--root", "/mnt", "--list")
	if err != nil || !r.list || r.format != volume.FormatTable || r.export.Volume.LockWait != volume.DefaultConfig().LockWait ||
		r.export.Volume.Root != "/mnt" || r.export.Volume.Logger == nil {
		t.Errorf("--list: %+v %v", r, err)
	}
	r, err = validate(t, NewVolumeOptions(), "--root", "/mnt", "--container", "containerd://web", "--namespace", "k8s.io", "--out", "d", "--signing-key", "k",
		"--case", "c-1", "--node", "ip-1", "--redact-env", "SECRET", "--lock-wait", "1m")
	e := r.export
	if err != nil || r.list || e.Container != "containerd://web" || e.Namespace != "k8s.io" || e.Out != "d" || e.SigningKeyFile != "k" ||
		e.Acquire.Case != "c-1" || e.Acquire.Node != "ip-1" || len(e.Acquire.RedactEnv) != 1 || e.Acquire.Version != version || e.Volume.LockWait.Minutes() != 1 {
		t.Errorf("--container: %+v %v", r, err)
	}
}
