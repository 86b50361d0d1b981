package evidence

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/warren-dev/warren/auth"
)

// Signer signs statements with an Ed25519 key. Its key id is the RFC 7638 thumbprint of the public key, as
// `warren keygen` prints it.
type Signer struct {
	key   ed25519.PrivateKey
	keyID string
}

// NewSigner wraps an Ed25519 private key.
func NewSigner(key ed25519.PrivateKey) (*Signer, error) {
	sk, err := auth.NewSigningKey(key)
	if err != nil {
		return nil, err
	}
	return &Signer{key: sk.Key, keyID: sk.KeyID}, nil
}

// LoadSigner reads a private key written by `warren keygen` (signing.key).
func LoadSigner(path string) (*Signer, error) {
	sk, err := auth.LoadSigningKey(path)
	if err != nil {
		return nil, err
	}
	return &Signer{key: sk.Key, keyID: sk.KeyID}, nil
}

// KeyID is the signer's key id.
func (s *Signer) KeyID() string { return s.keyID }

// Public is the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// SignStatement returns the DSSE envelope (JSON) of st, signed.
func (s *Signer) SignStatement(ctx context.Context, st *Statement) ([]byte, error) {
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the statement: %w", err)
	}
	es, err := dsse.NewEnvelopeSigner(ed25519SignerVerifier{priv: s.key, pub: s.Public(), keyID: s.keyID})
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(ctx, PayloadType, payload)
	if err != nil {
		return nil, fmt.Errorf("failed to sign the statement: %w", err)
	}
	out, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// ed25519SignerVerifier is dsse's SignerVerifier over crypto/ed25519 (pure Ed25519 of the PAE, RFC 8032), keyed by
// warren's key id. priv is nil for a verifier.
type ed25519SignerVerifier struct {
	priv  ed25519.PrivateKey
	pub   ed25519.PublicKey
	keyID string
}

func (v ed25519SignerVerifier) Sign(_ context.Context, data []byte) ([]byte, error) {
	if v.priv == nil {
		return nil, errors.New("no private key")
	}
	return ed25519.Sign(v.priv, data), nil
}

func (v ed25519SignerVerifier) Verify(_ context.Context, data, sig []byte) error {
	if !ed25519.Verify(v.pub, data, sig) {
		return errors.New("bad signature")
	}
	return nil
}

func (v ed25519SignerVerifier) KeyID() (string, error) { return v.keyID, nil }

func (v ed25519SignerVerifier) Public() crypto.PublicKey { return v.pub }

// Keys are the public keys statements are verified with, by key id.
type Keys struct {
	byID map[string]ed25519.PublicKey
}

// LoadKeys reads public key files (signing.pub from `warren keygen`, PEM or JWKS); only Ed25519 keys are kept.
func LoadKeys(paths ...string) (*Keys, error) {
	ks, err := auth.LoadPublicKeys(paths...)
	if err != nil {
		return nil, err
	}
	k := &Keys{byID: map[string]ed25519.PublicKey{}}
	for _, id := range ks.KeyIDs() {
		pub, _ := ks.Key(id)
		if ed, ok := pub.(ed25519.PublicKey); ok {
			k.byID[id] = ed
		}
	}
	if len(k.byID) == 0 {
		return nil, fmt.Errorf("no Ed25519 public key in %v: statements are signed with Ed25519 keys (`warren keygen`)", paths)
	}
	return k, nil
}

// NewKeys builds Keys from public keys.
func NewKeys(pubs ...ed25519.PublicKey) (*Keys, error) {
	k := &Keys{byID: map[string]ed25519.PublicKey{}}
	for _, p := range pubs {
		id, err := auth.KeyID(p)
		if err != nil {
			return nil, err
		}
		k.byID[id] = p
	}
	return k, nil
}

// IDs returns the key ids.
func (k *Keys) IDs() []string {
	ids := make([]string, 0, len(k.byID))
	for id := range k.byID {
		ids = append(ids, id)
	}
	return ids
}

// maxEnvelopeBytes bounds a statement file: a statement lists every file of an archive (a few hundred bytes each).
const maxEnvelopeBytes = 256 << 20

// OpenEnvelope checks a DSSE envelope's signature with keys and returns its statement. The errors say what broke:
// not an envelope, another payload type, signed by an unknown key, a signature that does not verify, a payload that
// is not an in-toto Statement v1 with warren's predicate.
func OpenEnvelope(ctx context.Context, data []byte, keys *Keys) (*Statement, error) {
	var env dsse.Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("not a DSSE envelope: %v", err)
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("payloadType is %q, want %q", clip(env.PayloadType), PayloadType)
	}
	if len(env.Signatures) == 0 {
		return nil, errors.New("the envelope has no signature")
	}
	var verifiers []dsse.Verifier
	var signedBy []string
	for _, s := range env.Signatures {
		signedBy = append(signedBy, s.KeyID)
		if pub, ok := keys.byID[s.KeyID]; ok {
			verifiers = append(verifiers, ed25519SignerVerifier{pub: pub, keyID: s.KeyID})
		}
	}
	if len(verifiers) == 0 {
		return nil, fmt.Errorf("signed by key %v, not by the key given (%v)", signedBy, keys.IDs())
	}
	ev, err := dsse.NewEnvelopeVerifier(verifiers...)
	if err != nil {
		return nil, err
	}
	_, payload, err := ev.VerifyAndDecode(ctx, &env)
	if err != nil {
		return nil, fmt.Errorf("the signature does not verify with key %v: the statement was changed after it was signed", signedBy)
	}
	return parseStatement(payload)
}
