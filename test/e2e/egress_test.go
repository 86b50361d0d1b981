package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-dev/warren/gatewaytls"
	"github.com/warren-dev/warren/internal/testenv/testcert"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// connectProxy is a minimal corporate HTTP CONNECT proxy with Basic authentication.
type connectProxy struct {
	ln       net.Listener
	user     string
	password string

	mu       sync.Mutex
	connects []string // CONNECT targets it let through
	refused  int
	aliases  map[string]string // host:port the proxy resolves itself, like a corporate proxy with its own DNS
	wg       sync.WaitGroup
	conns    []net.Conn
}

func startConnectProxy(t *testing.T, user, password string) *connectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln, user: user, password: password, aliases: map[string]string{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *connectProxy) url(user, password string) *url.URL {
	return &url.URL{Scheme: "http", User: url.UserPassword(user, password), Host: p.ln.Addr().String()}
}

func (p *connectProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *connectProxy) handle(c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		return
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.password))
	if req.Header.Get("Proxy-Authorization") != want {
		p.mu.Lock()
		p.refused++
		p.mu.Unlock()
		io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n")
		return
	}
	target := req.Host
	if a, ok := p.aliases[target]; ok {
		target = a
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.connects = append(p.connects, req.Host)
	p.conns = append(p.conns, up)
	p.mu.Unlock()
	io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n")
	done := make(chan struct{})
	go func() {
		io.Copy(up, br)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	<-done
}

func (p *connectProxy) seen() ([]string, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.connects...), p.refused
}

func TestConnectorThroughAProxy(t *testing.T) {
	gs := startGateway(t, "127.0.0.1:0")
	proxy := startConnectProxy(t, "svc-warren", "s3cr:et@")

	t.Run("explicit proxy with credentials", func(t *testing.T) {
		rc := startConnector(t, gs, "prod", connectorOpts{name: "proxied", proxy: http.ProxyURL(proxy.url("svc-warren", "s3cr:et@"))})
		gs.waitConnectors("prod", 1, 10*time.Second)
		token := callerToken(t, []string{"prod"}, allRules...)
		if code, _ := status(t, gs, "/clusters/prod/version", token); code != 200 {
			t.Fatalf("through the proxy: %d", code)
		}
		if connects, _ := proxy.seen(); len(connects) == 0 || connects[0] != gs.addr {
			t.Fatalf("proxy saw CONNECTs to %v, want %s", connects, gs.addr)
		}
		rc.stop()
		gs.waitConnectors("prod", 0, 5*time.Second)
	})
	t.Run("wrong proxy credentials", func(t *testing.T) {
		rc := startConnector(t, gs, "prod", connectorOpts{name: "badcreds", proxy: http.ProxyURL(proxy.url("svc-warren", "wrong"))})
		wait.Until(t, 5*time.Second, "two refused attempts", func() bool { return strings.Count(rc.log.String(), "retry_in=") >= 2 })
		if !strings.Contains(rc.log.String(), `msg="cannot reach the gateway"`) || !strings.Contains(rc.log.String(), "Proxy Authentication Required") {
			t.Fatalf("connector log:\n%s", rc.log.String())
		}
	})
	// HTTPS_PROXY and NO_PROXY, as a container gets them. Go never proxies loopback addresses, so the gateway goes
	// by a name only the proxy can resolve.
	t.Run("HTTPS_PROXY and NO_PROXY from the environment", func(t *testing.T) {
		cert, certs := chain(t)
		named := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{cert: &cert})
		_, port, _ := net.SplitHostPort(named.addr)
		name := gatewayName + ":" + port
		proxy.aliases[name] = named.addr
		caFile := writeFile(t, "root.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw})))
		tokenFile := writeFile(t, "connector.token", connectorToken(t, "prod"))
		args := []string{"connector", "--gateway", "https://" + name, "--token-file", tokenFile, "--ca-file", caFile, "--gateway-keys", gatewayPubFile(),
			"--kubeconfig", kube.ConnectorKubeconfig}
		env := []string{"HTTPS_PROXY=" + proxy.url("svc-warren", "s3cr:et@").String()}
		startProcessEnv(t, "connector", env, args...)
		named.waitConnectors("prod", 1, 20*time.Second)
		if connects, _ := proxy.seen(); !slices.Contains(connects, name) {
			t.Fatalf("proxy saw %v, want a CONNECT to %s", connects, name)
		}

		bypass := startProcessEnv(t, "connector", append(env, "NO_PROXY=.warren.invalid"), args...)
		wait.Until(t, 10*time.Second, "direct attempt failed", func() bool {
			return strings.Contains(bypass.log.String(), `msg="cannot reach the gateway"`) && strings.Contains(bypass.log.String(), "no such host")
		})
	})
}

// gatewayName is a host name that resolves nowhere; only the test proxy knows where it is.
const gatewayName = "gateway.warren.invalid"

// chain makes a root CA, an intermediate and a leaf for 127.0.0.1, and returns the leaf's TLS certificate (with
// the intermediate) and all three certificates.
func chain(t *testing.T) (tls.Certificate, []*x509.Certificate) {
	t.Helper()
	root, err := testcert.SelfSigned(testcert.Options{Name: "root", CA: true, Valid: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Issue(testcert.Options{Name: "intermediate", CA: true, Valid: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.Issue(testcert.Options{Name: "gateway", Hosts: []string{"127.0.0.1", gatewayName}, Valid: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return leaf.TLS(inter), []*x509.Certificate{root.Cert, inter.Cert, leaf.Cert}
}

func TestConnectorPins(t *testing.T) {
	cert, certs := chain(t)
	root, inter, leaf := certs[0], certs[1], certs[2]
	gs := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{cert: &cert})
	caFile := writeFile(t, "root.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})))
	strangerCert, stranger := chain(t)
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	withRoot := &tls.Config{RootCAs: x509.NewCertPool()}
	withRoot.RootCAs.AddCert(root)

	cases := []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"leaf pin alone", gatewaytls.PinTLSConfig(base, []string{gatewaytls.SPKIPin(leaf)}, false), true},
		{"intermediate pin alone", gatewaytls.PinTLSConfig(base, []string{gatewaytls.SPKIPin(inter)}, false), true},
		{"rotation: old and new pins", gatewaytls.PinTLSConfig(base, []string{gatewaytls.SPKIPin(stranger[2]), gatewaytls.SPKIPin(leaf)}, false), true},
		{"CA and pin", gatewaytls.PinTLSConfig(withRoot, []string{gatewaytls.SPKIPin(inter)}, true), true},
		{"wrong pin", gatewaytls.PinTLSConfig(base, []string{gatewaytls.SPKIPin(stranger[2])}, false), false},
		{"root pin not presented without CA", gatewaytls.PinTLSConfig(base, []string{gatewaytls.SPKIPin(root)}, false), false},
		{"CA right but pin wrong", gatewaytls.PinTLSConfig(withRoot, []string{gatewaytls.SPKIPin(stranger[1])}, true), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc := startConnector(t, gs, "prod", connectorOpts{name: c.name, caFile: caFile, tlsConfig: c.cfg})
			if c.ok {
				gs.waitConnectors("prod", 1, 10*time.Second)
				rc.stop()
				gs.waitConnectors("prod", 0, 5*time.Second)
				return
			}
			wait.Until(t, 5*time.Second, "two refused attempts", func() bool { return strings.Count(rc.log.String(), "retry_in=") >= 2 })
			logs := rc.log.String()
			if !strings.Contains(logs, `msg="gateway certificate pin mismatch: refusing the connection; check --pin against the gateway's certificate"`) ||
				!strings.Contains(logs, "the gateway presented "+gatewaytls.SPKIPin(leaf)+", "+gatewaytls.SPKIPin(inter)) {
				t.Fatalf("connector log:\n%s", logs)
			}
			if gs.g.Connectors("prod") != 0 {
				t.Fatal("a connector with a wrong pin got through")
			}
		})
	}

	// An impostor presents its own leaf with the real (public) intermediate: the pin matches a certificate in the
	// chain, but the intermediate never signed that leaf.
	forged := strangerCert
	forged.Certificate = [][]byte{strangerCert.Certificate[0], inter.Raw}
	impostor := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{cert: &forged})
	rc := startConnector(t, impostor, "prod", connectorOpts{name: "fooled?", caFile: caFile,
		tlsConfig: gatewaytls.PinTLSConfig(base, []string{gatewaytls.SPKIPin(inter)}, false)})
	wait.Until(t, 5*time.Second, "impostor refused", func() bool {
		return strings.Contains(rc.log.String(), "gateway certificate matches pin "+gatewaytls.SPKIPin(inter)+" but does not verify against it")
	})
	if impostor.g.Connectors("prod") != 0 {
		t.Fatal("the connector trusted an impostor presenting the pinned intermediate")
	}
}
