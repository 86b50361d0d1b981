package download

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSignFileVerifiesWithOpenSSL: what SignFile writes is what `openssl pkeyutl -verify -rawin` (OpenSSL 1.1.1
// and later, as the bootstrap script runs it) accepts, and a signature of other bytes is refused.
func TestSignFileVerifiesWithOpenSSL(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	bin := filepath.Join(dir, "warren-linux-amd64")
	os.WriteFile(bin, []byte(strings.Repeat("a connector binary ", 1<<16)), 0o755)
	sig, err := SignFile(key, bin)
	if err != nil || sig != bin+".sig" {
		t.Fatalf("SignFile = %q, %v", sig, err)
	}
	if err := VerifyFile(pub, bin, sig); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pubFile := filepath.Join(dir, "release.pub")
	os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	verify := func(file string) (string, error) {
		out, err := exec.Command("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pubFile, "-rawin", "-in", file, "-sigfile", sig).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(bin); err != nil || !strings.Contains(out, "Signature Verified Successfully") {
		t.Fatalf("openssl refused the signature: %v\n%s", err, out)
	}
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("another binary"), 0o755)
	if out, err := verify(other); err == nil {
		t.Fatalf("openssl accepted the signature for other bytes:\n%s", out)
	}
	if err := VerifyFile(pub, other, sig); err == nil {
		t.Fatal("VerifyFile accepted the signature for other bytes")
	}
}

// Without a download directory there is no signature to serve.
func TestNoSignatureWithoutDir(t *testing.T) {
	self := filepath.Join(t.TempDir(), "warren")
	os.WriteFile(self, []byte("x"), 0o755)
	h := New("", self)
	h.platform = "linux-amd64"
	if code, _, body := get(t, h, "GET", "/download/"+BinaryName(h.platform)+SignatureSuffix); code != 404 || !strings.Contains(body, "no release signature") {
		t.Fatalf("%d %s", code, body)
	}
}

// TestSignFiles: every file gets its verified signature, in order; the first that cannot be signed stops the run,
// named, with the signatures written before it returned.
func TestSignFiles(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	a, b, missing := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "missing")
	os.WriteFile(a, []byte("amd64"), 0o755)
	os.WriteFile(b, []byte("arm64"), 0o755)
	sigs, err := SignFiles(key, []string{a, b})
	if err != nil || strings.Join(sigs, " ") != a+".sig "+b+".sig" {
		t.Fatalf("SignFiles = %q, %v", sigs, err)
	}
	for _, f := range []string{a, b} {
		if err := VerifyFile(pub, f, f+".sig"); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	sigs, err = SignFiles(key, []string{a, missing, b})
	if want := missing + ": cannot read the file to sign: "; err == nil || !strings.HasPrefix(err.Error(), want) || len(sigs) != 1 || sigs[0] != a+".sig" {
		t.Fatalf("SignFiles with a missing file = %q, %v; want [%s.sig] and %q...", sigs, err, a, want)
	}
}
