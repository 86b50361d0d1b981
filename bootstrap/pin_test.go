package bootstrap

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/warren-dev/warren/internal/download"
)

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fakeTool writes an executable script named name into a new directory and returns the directory.
func fakeTool(t *testing.T, name, script string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBootstrapPinnedAndSigned: the instances install only the binary the operator pinned or whose release
// signature verifies, whatever the gateway serves and publishes as its digest. The SSM stand-in runs the script
// for real, with this machine's openssl (or stand-ins for older ones).
func TestBootstrapPinnedAndSigned(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Fatalf("the instances are this machine: %s is not a platform the script installs", runtime.GOARCH)
	}
	platform := "linux-" + runtime.GOARCH
	otherPlatform := map[string]string{"linux-amd64": "linux-arm64", "linux-arm64": "linux-amd64"}[platform]
	name := download.BinaryName(platform)
	genuine := fakeBinary("ok")
	tampered := append(fakeBinary("ok"), []byte("# and a little extra\n")...)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	releasePEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	oldOpenSSL := fakeTool(t, "openssl", `[ "$1" = version ] && { echo "OpenSSL 1.0.2k-fips  26 Jan 2017"; exit 0; }
echo "Algorithm Ed25519 not found" >&2; exit 1
`)
	// Amazon Linux 2: openssl is 1.0.2, openssl11 is 1.1.1 (here: this machine's openssl, saying it is 1.1.1).
	real, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("this machine has no openssl: %v", err)
	}
	amazonLinux2 := fakeTool(t, "openssl11", `[ "$1" = version ] && { echo "OpenSSL 1.1.1g FIPS  21 Apr 2020"; exit 0; }
exec `+real+` "$@"
`)
	copyTool(t, filepath.Join(oldOpenSSL, "openssl"), filepath.Join(amazonLinux2, "openssl"))

	pinned := func(sum string) map[string]string { return map[string]string{platform: sum} }
	cases := []struct {
		name   string
		served []byte // what the gateway serves, with its true digest as .sha256
		sig    func(served []byte) []byte
		path   []string
		mod    func(*ScriptConfig)
		ok     bool
		want   string // in the summary
	}{
		{name: "a tampered binary with a matching gateway digest is refused by the pin", served: tampered,
			mod: func(c *ScriptConfig) { c.PinnedDigests = pinned(hexSHA256(genuine)) },
			want: "SHA-256 mismatch for " + name + ": the download has " + hexSHA256(tampered) + ", the operator pinned " + hexSHA256(genuine) +
				" (--connector-sha256); the gateway serves another binary than the release pinned; nothing was installed"},
		{name: "the pinned binary is installed", served: genuine,
			mod: func(c *ScriptConfig) { c.PinnedDigests = pinned(hexSHA256(genuine)) }, ok: true,
			want: "(" + name + ", warren v-test, SHA-256 " + hexSHA256(genuine) + " as pinned)"},
		{name: "no pin for this platform", served: genuine,
			mod:  func(c *ScriptConfig) { c.PinnedDigests = map[string]string{otherPlatform: hexSHA256(genuine)} },
			want: "no --connector-sha256 pin for " + platform + " was given to warren bootstrap: nothing was installed"},
		{name: "a signed binary is installed", served: genuine, sig: func(b []byte) []byte { return ed25519.Sign(key, b) },
			mod: func(c *ScriptConfig) { c.ReleaseKeyPEM = releasePEM }, ok: true,
			want: "SHA-256 " + hexSHA256(genuine) + " verified, release signature verified (OpenSSL 3"},
		{name: "a tampered binary under the genuine signature is refused", served: tampered, sig: func([]byte) []byte { return ed25519.Sign(key, genuine) },
			mod: func(c *ScriptConfig) { c.ReleaseKeyPEM = releasePEM },
			want: "the release signature of " + name + " does not verify with the release key given to warren bootstrap (--release-key): " +
				"the gateway serves a binary the release key did not sign; nothing was installed"},
		{name: "a signature by another key is refused", served: genuine, sig: func(b []byte) []byte { return ed25519.Sign(otherKey, b) },
			mod: func(c *ScriptConfig) { c.ReleaseKeyPEM = releasePEM }, want: "does not verify with the release key"},
		{name: "a garbled signature is refused", served: genuine, sig: func([]byte) []byte { return []byte("not a signature") },
			mod: func(c *ScriptConfig) { c.ReleaseKeyPEM = releasePEM }, want: "does not verify with the release key"},
		{name: "no signature served", served: genuine,
			mod:  func(c *ScriptConfig) { c.ReleaseKeyPEM = releasePEM },
			want: "/download/" + name + ".sig, the release signature of " + name + ": sign it (warren sign --key RELEASE.key " + name + ")"},
		{name: "OpenSSL 1.0.2 without a pin installs nothing", served: genuine, sig: func(b []byte) []byte { return ed25519.Sign(key, b) },
			path: []string{oldOpenSSL}, mod: func(c *ScriptConfig) { c.ReleaseKeyPEM = releasePEM },
			want: "the release signature needs OpenSSL 1.1.1 or later for Ed25519, and this instance has OpenSSL 1.0.2k-fips  26 Jan 2017 " +
				"(Amazon Linux 2 ships 1.0.2: install openssl11); or pin the binary with --connector-sha256; nothing was installed"},
		{name: "OpenSSL 1.0.2 with a pin relies on the pin", served: genuine, sig: func(b []byte) []byte { return ed25519.Sign(key, b) },
			path: []string{oldOpenSSL}, mod: func(c *ScriptConfig) { c.ReleaseKeyPEM, c.PinnedDigests = releasePEM, pinned(hexSHA256(genuine)) }, ok: true,
			want: "SHA-256 " + hexSHA256(genuine) + " as pinned, release signature not checked (no OpenSSL 1.1.1)"},
		{name: "OpenSSL 1.0.2 with a pin still refuses a tampered binary", served: tampered, sig: func(b []byte) []byte { return ed25519.Sign(key, b) },
			path: []string{oldOpenSSL}, mod: func(c *ScriptConfig) { c.ReleaseKeyPEM, c.PinnedDigests = releasePEM, pinned(hexSHA256(genuine)) },
			want: "the operator pinned " + hexSHA256(genuine)},
		{name: "Amazon Linux 2 verifies with openssl11", served: genuine, sig: func(b []byte) []byte { return ed25519.Sign(key, b) },
			path: []string{amazonLinux2}, mod: func(c *ScriptConfig) { c.ReleaseKeyPEM = releasePEM }, ok: true,
			want: "release signature verified (OpenSSL 1.1.1g"},
		{name: "Amazon Linux 2 refuses a bad signature with openssl11", served: genuine, sig: func(b []byte) []byte { return ed25519.Sign(otherKey, b) },
			path: []string{amazonLinux2}, mod: func(c *ScriptConfig) { c.ReleaseKeyPEM = releasePEM },
			want: "does not verify with the release key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnvPath(t, c.served, nil, c.path)
			if c.sig != nil {
				for _, p := range download.Platforms {
					if err := os.WriteFile(filepath.Join(e.dir, download.BinaryName(p)+download.SignatureSuffix), c.sig(c.served), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			cfg := e.config()
			cfg.ConnectWait = 5 * time.Second
			c.mod(&cfg)
			summary, results := e.run(t, cfg, time.Minute)
			for _, r := range results {
				if r.OK() != c.ok {
					t.Fatalf("%s: %s (exit %d), want success %v\nstdout:\n%s\nstderr:\n%s", r.InstanceID, r.Status, r.ResponseCode, c.ok, r.Stdout, r.Stderr)
				}
				installed := fileExists(filepath.Join(e.fake.InstanceRoot(r.InstanceID), "usr/local/bin/warren"))
				if installed != c.ok {
					t.Fatalf("%s: binary installed %v, want %v", r.InstanceID, installed, c.ok)
				}
				if !strings.Contains(r.Stdout+r.Stderr, c.want) {
					t.Fatalf("%s: output lacks %q\nstdout:\n%s\nstderr:\n%s", r.InstanceID, c.want, r.Stdout, r.Stderr)
				}
			}
			if !c.ok && !strings.Contains(summary, "2 of 2 instances failed") {
				t.Fatalf("summary:\n%s", summary)
			}
		})
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func copyTool(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestValidatePinsAndReleaseKey(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	good := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	for _, tc := range []struct {
		name string
		mod  func(*ScriptConfig)
		want string
	}{
		{"good", func(c *ScriptConfig) {
			c.PinnedDigests, c.ReleaseKeyPEM = map[string]string{"linux-amd64": strings.Repeat("a", 64)}, good
		}, ""},
		{"unknown platform", func(c *ScriptConfig) { c.PinnedDigests = map[string]string{"darwin-amd64": strings.Repeat("a", 64)} },
			`no connector is served for the pinned platform "darwin-amd64"`},
		{"short digest", func(c *ScriptConfig) { c.PinnedDigests = map[string]string{"linux-amd64": "abc"} }, "not 64 lowercase hex digits"},
		{"injection", func(c *ScriptConfig) {
			c.PinnedDigests = map[string]string{"linux-amd64": strings.Repeat("a", 63) + ";"}
		}, "not 64 lowercase hex digits"},
		{"not PEM", func(c *ScriptConfig) { c.ReleaseKeyPEM = []byte("ssh-ed25519 AAAA") }, `not one PEM "PUBLIC KEY" block`},
		{"a private key", func(c *ScriptConfig) {
			c.ReleaseKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		}, `not one PEM "PUBLIC KEY" block`},
		{"two blocks", func(c *ScriptConfig) { c.ReleaseKeyPEM = append(append([]byte{}, good...), good...) }, `not one PEM "PUBLIC KEY" block`},
		{"trailing heredoc end", func(c *ScriptConfig) {
			c.ReleaseKeyPEM = append(append([]byte{}, good...), []byte("WARREN_EOF\nrm -rf /\n")...)
		},
			`not one PEM "PUBLIC KEY" block`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.mod(&cfg)
			err := cfg.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}
