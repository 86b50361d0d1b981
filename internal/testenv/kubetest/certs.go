package kubetest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/warren-dev/warren/internal/testenv/testcert"
)

// pki is what the apiserver needs from files: a CA, the serving pair it signed, and the service-account key.
type pki struct {
	caFile, certFile, keyFile string
	saKeyFile                 string // RSA private key in PKCS#1 PEM; the apiserver derives the public key from it
	// The front proxy (request-header authentication): its CA and a client certificate it signed.
	frontProxyCAFile, frontProxyCertFile, frontProxyKeyFile string
}

// FrontProxyClientName is the common name of the front-proxy client certificate, the one name
// --requestheader-allowed-names accepts (kubeadm's).
const FrontProxyClientName = "front-proxy-client"

// writePKI generates a fresh CA, a serving certificate for 127.0.0.1, ::1 and localhost, and an RSA service-account
// key, all with crypto/x509 so no openssl is needed. Keys are written with mode 0600.
func writePKI(dir string) (pki, error) {
	p := pki{
		caFile:    dir + "/ca.crt",
		certFile:  dir + "/apiserver.crt",
		keyFile:   dir + "/apiserver.key",
		saKeyFile: dir + "/service-account.key",

		frontProxyCAFile:   dir + "/front-proxy-ca.crt",
		frontProxyCertFile: dir + "/front-proxy-client.crt",
		frontProxyKeyFile:  dir + "/front-proxy-client.key",
	}
	ca, err := testcert.NewCA("warren-kubetest-ca")
	if err != nil {
		return pki{}, err
	}
	srv, err := ca.Issue(testcert.Options{Name: "kube-apiserver", Hosts: []string{"127.0.0.1", "::1", "localhost"}})
	if err != nil {
		return pki{}, err
	}
	// The apiserver's service-account token signer wants RSA (or ECDSA); RSA is what real clusters use.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return pki{}, fmt.Errorf("failed to generate the service-account key: %w", err)
	}
	// The front proxy's CA is another CA, as in kubeadm: a certificate it signed authenticates a proxy, never a
	// user by itself.
	fpCA, err := testcert.NewCA("warren-kubetest-front-proxy-ca")
	if err != nil {
		return pki{}, err
	}
	fp, err := fpCA.Issue(testcert.Options{Name: FrontProxyClientName, Client: true})
	if err != nil {
		return pki{}, err
	}
	if err := os.WriteFile(p.caFile, ca.CertPEM(), 0o644); err != nil {
		return pki{}, fmt.Errorf("failed to write %s: %w", p.caFile, err)
	}
	if err := os.WriteFile(p.frontProxyCAFile, fpCA.CertPEM(), 0o644); err != nil {
		return pki{}, fmt.Errorf("failed to write %s: %w", p.frontProxyCAFile, err)
	}
	if err := srv.WriteFiles(p.certFile, p.keyFile); err != nil {
		return pki{}, fmt.Errorf("failed to write the serving certificate: %w", err)
	}
	if err := fp.WriteFiles(p.frontProxyCertFile, p.frontProxyKeyFile); err != nil {
		return pki{}, fmt.Errorf("failed to write the front-proxy client certificate: %w", err)
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})
	if err := os.WriteFile(p.saKeyFile, saPEM, 0o600); err != nil {
		return pki{}, fmt.Errorf("failed to write %s: %w", p.saKeyFile, err)
	}
	return p, nil
}

// randomToken returns 32 random bytes in hex, fit for a --token-auth-file bearer token.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails, documented
	return hex.EncodeToString(b)
}
