package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/warren-dev/warren/gatewaytls"
)

// ParsePins checks pins of the form sha256:BASE64, as the connector's --pin.
func ParsePins(pins []string) ([]string, error) {
	if len(pins) == 0 {
		return nil, nil
	}
	return gatewaytls.ParsePins(pins)
}

// pinnedAnchor connects to the gateway once, checks its chain as the connector checks it (gatewaytls.PinTLSConfig:
// a pinned certificate in the chain, the chain verifying up to it, and against caPEM when given), and returns the
// pinned certificate as PEM. client-go's TLS configuration has no hook for pins, so that certificate becomes the
// only trust anchor of every later connection: each of them must chain to it (a certificate in the roots anchors a
// chain even when it is not self-signed), and is still checked for the host name and validity period.
func pinnedAnchor(ctx context.Context, gateway string, caPEM []byte, pins []string) ([]byte, error) {
	parsed, err := ParsePins(pins)
	if err != nil {
		return nil, fmt.Errorf("--pin: %w", err)
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		base.RootCAs = x509.NewCertPool()
		if !base.RootCAs.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("--ca-file holds no PEM certificate")
		}
	}
	tlsCfg := gatewaytls.PinTLSConfig(base, parsed, len(caPEM) > 0)
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: tlsCfg, TLSHandshakeTimeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(gateway, "/")+"/healthz", nil)
	if err != nil {
		return nil, fmt.Errorf("--gateway %q: %v", gateway, err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("cannot check the gateway's certificate against --pin: %w", err)
	}
	resp.Body.Close()
	if resp.TLS == nil {
		return nil, fmt.Errorf("--pin needs an https --gateway")
	}
	for _, c := range resp.TLS.PeerCertificates {
		for _, p := range parsed {
			if gatewaytls.SPKIPin(c) == p {
				return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), nil
			}
		}
	}
	// Not reached: the handshake's VerifyConnection refused a chain without a pinned certificate.
	return nil, fmt.Errorf("the gateway's certificate matches no --pin")
}
