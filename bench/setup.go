package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/testcert"
)

// prepare writes the TLS material (a CA and a leaf for 127.0.0.1), the warren signing key, a connector token and a
// caller token allowed to read pods and their logs.
func prepare(dir string) env {
	e := env{dir}
	ca, err := testcert.SelfSigned(testcert.Options{Name: "warren bench CA", CA: true, Valid: 48 * time.Hour})
	must(err)
	leaf, err := ca.Issue(testcert.Options{Name: "127.0.0.1", Hosts: []string{"127.0.0.1", "localhost"}, Valid: 48 * time.Hour})
	must(err)
	write := func(name string, data []byte) { must(os.WriteFile(e.path(name), data, 0o600)) }
	write("ca.pem", ca.CertPEM())
	write("cert.pem", leaf.CertPEM())
	write("key.pem", leaf.KeyPEM())

	_, err = auth.GenerateKeyPair(filepath.Join(dir, "keys"))
	must(err)
	must(os.Rename(filepath.Join(dir, "keys", auth.PublicKeyFile), e.path("signing.pub")))
	sk, err := auth.LoadSigningKey(filepath.Join(dir, "keys", auth.SigningKeyFile))
	must(err)
	// The gateway's own key, which signs connector credentials: connectors keep them across a gateway restart.
	_, err = auth.GenerateKeyPair(filepath.Join(dir, "gateway-key"))
	must(err)
	ct, err := sk.IssueConnector("bench", 48*time.Hour, time.Now())
	must(err)
	write("connector.token", []byte(ct))
	rule, err := auth.ParseRule("get,list:pods,pods/log")
	must(err)
	tok, err := sk.IssueCaller(auth.IssueOptions{Subject: "bench", Clusters: []string{"bench"}, Rules: []auth.Rule{rule}, TTL: 48 * time.Hour})
	must(err)
	write("caller.token", []byte(tok))
	return e
}

// sshSetup is a private sshd on a free loopback port: its own host key, config and authorized_keys.
type sshSetup struct {
	dir, port, clientKey string
	sshd                 *proc
}

func startSSHD(e env) *sshSetup {
	s := &sshSetup{dir: e.path("ssh")}
	must(os.MkdirAll(s.dir, 0o700))
	must(os.MkdirAll("/run/sshd", 0o755)) // sshd's privilege separation directory
	for _, k := range []string{"host", "client"} {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(s.dir, k)).CombinedOutput()
		if err != nil {
			fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(s.dir, "client.pub"))
	must(err)
	must(os.WriteFile(filepath.Join(s.dir, "authorized_keys"), pub, 0o600))
	_, s.port, _ = net.SplitHostPort(freePort())
	cfg := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s/host
AuthorizedKeysFile %s/authorized_keys
PidFile %s/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
Compression no
LogLevel ERROR
`, s.port, s.dir, s.dir, s.dir)
	must(os.WriteFile(filepath.Join(s.dir, "sshd_config"), []byte(cfg), 0o600))
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
	}
	s.sshd = startCmd("sshd", false, sshd, "-D", "-e", "-f", filepath.Join(s.dir, "sshd_config"))
	waitListening("127.0.0.1:" + s.port)
	s.clientKey = filepath.Join(s.dir, "client")
	return s
}

// tunnel starts `ssh -N -R` from the "connector" side: the sshd listens on a new loopback port and forwards it to
// the backend. cipher "" keeps OpenSSH's default (chacha20-poly1305). via is where to reach sshd (a WAN proxy).
func (s *sshSetup) tunnel(name, cipher, backend, via string) (p *proc, addr string) {
	addr = freePort()
	host, port, _ := net.SplitHostPort(via)
	if via == "" {
		host, port = "127.0.0.1", s.port
	}
	args := []string{"-N", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR", "-i", s.clientKey,
		"-p", port, "-R", addr + ":" + backend}
	if cipher != "" {
		args = append(args, "-c", cipher)
	}
	args = append(args, "root@"+host)
	p = startCmd(name, false, "ssh", args...)
	waitListening(addr)
	return p, addr
}

func callerHeader(e env) http.Header {
	return http.Header{"Authorization": {"Bearer " + e.read("caller.token")}}
}
