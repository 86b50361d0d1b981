package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// A leaf issued through an intermediate verifies up to its root for its hosts, and for no other.
func TestChainVerifies(t *testing.T) {
	root, err := NewCA("root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Issue(Options{Name: "intermediate", CA: true})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.Issue(Options{Name: "gateway", Hosts: []string{"127.0.0.1", "gw.example"}})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(append(leaf.CertPEM(), inter.CertPEM()...), leaf.KeyPEM())
	if err != nil {
		t.Fatalf("PEM pair: %v", err)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	inters.AddCert(inter.Cert)
	for _, host := range []string{"127.0.0.1", "gw.example"} {
		if _, err := leaf.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inters}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: roots, Intermediates: inters}); err == nil {
		t.Error("verified for a host it does not name")
	}
	if got := len(leaf.TLS(inter).Certificate); got != 2 || len(pair.Certificate) != 2 {
		t.Errorf("chain of %d certificates, want 2", got)
	}
}
