package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
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
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pki{}, fmt.Errorf("failed to generate the CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "warren-kubetest-ca"},
		NotBefore:             now.Add(-time.Hour), // tolerate a little clock skew
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return pki{}, fmt.Errorf("failed to create the CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return pki{}, fmt.Errorf("failed to parse the CA certificate: %w", err)
	}

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pki{}, fmt.Errorf("failed to generate the serving key: %w", err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return pki{}, fmt.Errorf("failed to create the serving certificate: %w", err)
	}
	srvKeyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return pki{}, fmt.Errorf("failed to encode the serving key: %w", err)
	}

	// The apiserver's service-account token signer wants RSA (or ECDSA); RSA is what real clusters use.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return pki{}, fmt.Errorf("failed to generate the service-account key: %w", err)
	}

	// The front proxy's CA is another CA, as in kubeadm: a certificate it signed authenticates a proxy, never a
	// user by itself.
	fpCADER, fpCA, fpCAKey, err := newCA("warren-kubetest-front-proxy-ca", now)
	if err != nil {
		return pki{}, err
	}
	fpKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pki{}, fmt.Errorf("failed to generate the front-proxy client key: %w", err)
	}
	fpDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: FrontProxyClientName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, fpCA, &fpKey.PublicKey, fpCAKey)
	if err != nil {
		return pki{}, fmt.Errorf("failed to create the front-proxy client certificate: %w", err)
	}
	fpKeyDER, err := x509.MarshalPKCS8PrivateKey(fpKey)
	if err != nil {
		return pki{}, fmt.Errorf("failed to encode the front-proxy client key: %w", err)
	}

	for _, f := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{
		{p.caFile, "CERTIFICATE", caDER, 0o644},
		{p.certFile, "CERTIFICATE", srvDER, 0o644},
		{p.keyFile, "PRIVATE KEY", srvKeyDER, 0o600},
		{p.saKeyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey), 0o600},
		{p.frontProxyCAFile, "CERTIFICATE", fpCADER, 0o644},
		{p.frontProxyCertFile, "CERTIFICATE", fpDER, 0o644},
		{p.frontProxyKeyFile, "PRIVATE KEY", fpKeyDER, 0o600},
	} {
		data := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(f.path, data, f.mode); err != nil {
			return pki{}, fmt.Errorf("failed to write %s: %w", f.path, err)
		}
	}
	return p, nil
}

// newCA makes a self-signed ECDSA CA valid for a week.
func newCA(name string, now time.Time) (der []byte, cert *x509.Certificate, key *ecdsa.PrivateKey, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to generate the key of %s: %w", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key); err != nil {
		return nil, nil, nil, fmt.Errorf("failed to create %s: %w", name, err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		return nil, nil, nil, fmt.Errorf("failed to parse %s: %w", name, err)
	}
	return der, cert, key, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n.Add(n, big.NewInt(1))
}

// randomToken returns 32 random bytes in hex, fit for a --token-auth-file bearer token.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails, documented
	return hex.EncodeToString(b)
}
