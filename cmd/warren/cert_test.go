package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/warren-dev/warren/internal/testenv/testcert"
)

// writeTestCert writes a self-signed tls.crt and tls.key for 127.0.0.1 into dir.
func writeTestCert(t *testing.T, dir string) {
	t.Helper()
	c, err := testcert.SelfSigned(testcert.Options{Name: "test", Hosts: []string{"127.0.0.1"}, Valid: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFiles(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")); err != nil {
		t.Fatal(err)
	}
}
