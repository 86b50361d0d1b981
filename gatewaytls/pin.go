// Package gatewaytls is how a client of the gateway verifies it: the system roots or the gateway's CA, and SPKI pins
// of a certificate in its chain (the leaf or an intermediate; several pins allow rotation). The connector, warren
// bootstrap (which hands the same pins to the connectors it installs), warren acquire and package client all check
// the gateway this way.
package gatewaytls

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrPinMismatch is returned when the gateway's certificate chain matches none of the configured pins.
var ErrPinMismatch = errors.New("gateway certificate matches no --pin")

// SPKIPin returns the pin of a certificate: "sha256:" and the base64 of the SHA-256 of its SubjectPublicKeyInfo,
// as in HPKP (RFC 7469) and `openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary
// | base64`.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + base64.StdEncoding.EncodeToString(sum[:])
}

// ParsePins checks pins of the form sha256:BASE64 (32 bytes).
func ParsePins(pins []string) ([]string, error) {
	out := make([]string, 0, len(pins))
	for _, p := range pins {
		b64, ok := strings.CutPrefix(strings.TrimSpace(p), "sha256:")
		raw, err := base64.StdEncoding.DecodeString(b64)
		if !ok || err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("pin %q is not sha256:BASE64 of a 32-byte SPKI hash", p)
		}
		out = append(out, "sha256:"+b64)
	}
	return out, nil
}

// PinTLSConfig returns a copy of base that also requires the gateway's chain to contain a certificate whose SPKI
// matches one of pins (the leaf or an intermediate: several pins allow rotation). When verifyCA is false, the pin
// replaces CA verification: a pinned leaf must still be valid for the host name and period, and a pinned
// intermediate must have signed the leaf (through the chain presented).
func PinTLSConfig(base *tls.Config, pins []string, verifyCA bool) *tls.Config {
	cfg := base.Clone()
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg.InsecureSkipVerify = !verifyCA // replaced by VerifyConnection below, never switched off
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if verifyCA {
			for _, chain := range cs.VerifiedChains {
				for _, c := range chain {
					if contains(pins, SPKIPin(c)) {
						return nil
					}
				}
			}
			return mismatch(cs.PeerCertificates)
		}
		certs := cs.PeerCertificates
		if len(certs) == 0 {
			return errors.New("gateway presented no certificate")
		}
		for i, c := range certs {
			if !contains(pins, SPKIPin(c)) {
				continue
			}
			roots := x509.NewCertPool()
			roots.AddCert(c)
			inter := x509.NewCertPool()
			for j := 1; j < i; j++ {
				inter.AddCert(certs[j])
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: cs.ServerName, Roots: roots, Intermediates: inter}); err != nil {
				return fmt.Errorf("gateway certificate matches pin %s but does not verify against it: %w", SPKIPin(c), err)
			}
			return nil
		}
		return mismatch(certs)
	}
	return cfg
}

func mismatch(certs []*x509.Certificate) error {
	presented := make([]string, len(certs))
	for i, c := range certs {
		presented[i] = SPKIPin(c)
	}
	return fmt.Errorf("%w: the gateway presented %s", ErrPinMismatch, strings.Join(presented, ", "))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
