package auth

import (
	"crypto/rsa"
	"math/big"
	"net/url"
	"testing"
)

type rsaPub struct {
	n []byte
	e int
}

func (p *rsaPub) key() *rsa.PublicKey { return &rsa.PublicKey{N: new(big.Int).SetBytes(p.n), E: p.e} }

func mustURL(t testing.TB, raw string) *url.URL {
	t.Helper()
	u, err := url.ParseRequestURI(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
