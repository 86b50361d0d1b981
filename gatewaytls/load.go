package gatewaytls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Load is how connectors and bootstrap verify the gateway: system roots, or the CA in caFile, and SPKI
// pins when given. It also returns the CA's PEM ("" without caFile). Errors name --ca-file and --pin.
func Load(caFile string, pins []string) (*tls.Config, []byte, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var pem []byte
	if caFile != "" {
		var err error
		if pem, err = os.ReadFile(caFile); err != nil {
			return nil, nil, fmt.Errorf("cannot read --ca-file: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("--ca-file %s holds no PEM certificate", caFile)
		}
	}
	if len(pins) > 0 {
		parsed, err := ParsePins(pins)
		if err != nil {
			return nil, nil, fmt.Errorf("--pin: %w", err)
		}
		cfg = PinTLSConfig(cfg, parsed, caFile != "")
	}
	return cfg, pem, nil
}
