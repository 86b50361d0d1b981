// Package testcert makes throwaway certificates (ECDSA P-256) for tests, benchmarks and the demo: CAs, the
// certificates they sign, and self-signed ones. Its keys are never protected: nothing it makes belongs in production.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// Cert is a certificate and its key.
type Cert struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Options describe a certificate.
type Options struct {
	Name string // subject common name
	// Hosts are the IP addresses and DNS names a serving certificate is valid for.
	Hosts []string
	// Valid is how long the certificate is valid from now; default 7 days. It is valid from an hour ago already, to
	// tolerate a little clock skew.
	Valid time.Duration
	CA    bool // a CA (it may sign certificates), else a leaf
	// Client makes a leaf a client certificate (ExtKeyUsageClientAuth) instead of a serving one.
	Client bool
}

// SelfSigned makes a certificate signed by its own key.
func SelfSigned(o Options) (*Cert, error) { return issue(o, nil) }

// NewCA makes a self-signed CA.
func NewCA(name string) (*Cert, error) { return issue(Options{Name: name, CA: true}, nil) }

// Issue makes a certificate signed by c.
func (c *Cert) Issue(o Options) (*Cert, error) { return issue(o, c) }

func issue(o Options, parent *Cert) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("failed to generate the key of %s: %w", o.Name, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, fmt.Errorf("failed to draw a serial number: %w", err)
	}
	if o.Valid <= 0 {
		o.Valid = 7 * 24 * time.Hour
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: o.Name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(o.Valid),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	switch {
	case o.CA:
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
	case o.Client:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, h := range o.Hosts {
		if h = strings.TrimSpace(h); h == "" {
			continue
		} else if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return nil, fmt.Errorf("failed to create the certificate of %s: %w", o.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the certificate of %s: %w", o.Name, err)
	}
	return &Cert{Cert: cert, Key: key}, nil
}

// CertPEM is the certificate in PEM.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// KeyPEM is the key in PKCS#8 PEM.
func (c *Cert) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic(err) // an ECDSA P-256 key always encodes
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// TLS is the certificate for a tls.Config, followed by the intermediates given.
func (c *Cert) TLS(intermediates ...*Cert) tls.Certificate {
	out := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, i := range intermediates {
		out.Certificate = append(out.Certificate, i.Cert.Raw)
	}
	return out
}

// WriteFiles writes the certificate's PEM to certFile (mode 0644) and the key's to keyFile (0600).
func (c *Cert) WriteFiles(certFile, keyFile string) error {
	if err := os.WriteFile(certFile, c.CertPEM(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyFile, c.KeyPEM(), 0o600)
}
