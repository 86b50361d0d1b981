package download

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
)

// SignatureSuffix names a binary's release signature: warren-linux-amd64.sig is the raw 64-byte Ed25519
// signature (RFC 8032, of the whole file) of warren-linux-amd64, as `openssl pkeyutl -sign -rawin` makes and
// `openssl pkeyutl -verify -rawin -sigfile` checks it. The gateway serves it from its download directory.
const SignatureSuffix = ".sig"

// SignFile writes path+SignatureSuffix, the signature of the file at path by key, and returns its name. The file
// is read whole: Ed25519 signs the message itself, not a digest, so that OpenSSL can check it with -rawin.
func SignFile(key ed25519.PrivateKey, path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the file to sign: %w", err)
	}
	sigPath := path + SignatureSuffix
	if err := os.WriteFile(sigPath, ed25519.Sign(key, data), 0o644); err != nil {
		return "", fmt.Errorf("cannot write the signature: %w", err)
	}
	return sigPath, nil
}

// VerifyFile checks the signature file sigPath of the file at path against pub.
func VerifyFile(pub ed25519.PublicKey, path, sigPath string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	sig, err := os.ReadFile(sigPath)
	if err != nil {
		return err
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, data, sig) {
		return errors.New("the signature does not verify with this key")
	}
	return nil
}

// SignFiles signs each file with key (SignFile) and checks each signature it wrote against key's public half, so
// that what is handed out verifies as the instances will check it. It returns the signature files written, in
// order, up to the first failure, whose error names the file.
func SignFiles(key ed25519.PrivateKey, files []string) ([]string, error) {
	var sigs []string
	for _, f := range files {
		sig, err := SignFile(key, f)
		if err != nil {
			return sigs, fmt.Errorf("%s: %w", f, err)
		}
		if err := VerifyFile(key.Public().(ed25519.PublicKey), f, sig); err != nil {
			return sigs, fmt.Errorf("%s: %w", f, err)
		}
		sigs = append(sigs, sig)
	}
	return sigs, nil
}
