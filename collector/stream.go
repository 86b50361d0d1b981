package collector

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
	"unicode/utf8"
)

// Bounds of the acquirer-side stream parser: the stream comes from inside a container an attacker may own.
const (
	maxSelfJSON     = 64 << 10
	maxSkippedJSON  = 64 << 20
	maxManifestJSON = 512 << 20
	maxNodeJSON     = 4 << 20
	maxEntries      = 4 << 20
	maxArchivePath  = 8 << 10
	// metaAllowance is what the collector's generated entries (bodyfile, processes.json, ...) may add to MaxBytes.
	metaAllowance = 1 << 30
)

// receiver checks a collector stream and passes it on to the sink. Owned by Collect's goroutine.
type receiver struct {
	sink       Sink
	wantSHA256 string // hex digest of the binary sent; "" skips the self check (tests of the parser)
	maxTotal   int64  // bound on the sum of entry sizes; negative: none
	res        *Result
	// prefixes are the archive directories the stream may hold besides container/ (a mode's own: node/, drift/).
	prefixes []string
	self     SelfInfo
	manifest *Manifest
	seen     map[string]bool
	total    int64
}

// receive reads the stream from r to its end. The first entry must be SelfPath with the expected self-hash;
// nothing reaches the sink before that check. Each entry is hashed as it passes; the manifest (last entry) must
// list every earlier entry with the same size and hash, and nothing more.
func (rc *receiver) receive(r io.Reader) error {
	tr := tar.NewReader(r)
	rc.seen = map[string]bool{}
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			if rc.manifest == nil {
				return &IntegrityError{Path: ManifestPath, Reason: "the stream ended without a manifest"}
			}
			return rc.drain(r)
		}
		if err != nil {
			return &IntegrityError{Path: lastPath(rc.res), Reason: "malformed tar stream after this entry: " + err.Error()}
		}
		if i >= maxEntries {
			return &IntegrityError{Path: hdr.Name, Reason: fmt.Sprintf("more than %d entries", maxEntries)}
		}
		if rc.manifest != nil {
			return &IntegrityError{Path: hdr.Name, Reason: "an entry after the manifest"}
		}
		if err := rc.checkHeader(hdr, i); err != nil {
			return err
		}
		if err := rc.entry(tr, hdr, i); err != nil {
			return err
		}
	}
}

// drain reads what follows the archive's end marker; only zero padding may follow.
func (rc *receiver) drain(r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			if b != 0 {
				return &IntegrityError{Path: ManifestPath, Reason: "data after the end of the archive"}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func lastPath(res *Result) string {
	if len(res.Files) == 0 {
		return "(start of stream)"
	}
	return res.Files[len(res.Files)-1].Path
}

// validArchivePath: valid UTF-8 without control characters, relative, clean, below container/ (or one of the
// extra prefixes, each ending in '/') or one of the collector's own names.
func validArchivePath(name string, prefixes ...string) bool {
	if len(name) == 0 || len(name) > maxArchivePath || !utf8.ValidString(name) || path.Clean(name) != name ||
		strings.HasPrefix(name, "/") || name == ".." || strings.HasPrefix(name, "../") || strings.Contains(name, "/../") {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] == 0x7f {
			return false
		}
	}
	switch name {
	case SelfPath, SkippedPath, ManifestPath:
		return true
	}
	for _, p := range append([]string{"container/"}, prefixes...) {
		if strings.HasPrefix(name, p) && len(name) > len(p) {
			return true
		}
	}
	return false
}

func (rc *receiver) checkHeader(hdr *tar.Header, i int) error {
	shown := EscapeName(hdr.Name)
	if hdr.Typeflag != tar.TypeReg {
		return &IntegrityError{Path: shown, Reason: fmt.Sprintf("entry of type %q; only regular files are accepted", hdr.Typeflag)}
	}
	if !validArchivePath(hdr.Name, rc.prefixes...) {
		return &IntegrityError{Path: shown, Reason: "not an acceptable archive path"}
	}
	if rc.seen[hdr.Name] {
		return &IntegrityError{Path: shown, Reason: "a second entry of this name"}
	}
	rc.seen[hdr.Name] = true
	if i == 0 && hdr.Name != SelfPath {
		return &IntegrityError{Path: shown, Reason: "the stream does not start with " + SelfPath}
	}
	if i > 0 && hdr.Name == SelfPath {
		return &IntegrityError{Path: shown, Reason: "a second self entry"}
	}
	if hdr.Size < 0 {
		return &IntegrityError{Path: shown, Reason: "negative size"}
	}
	rc.total += hdr.Size
	if rc.maxTotal >= 0 && rc.total > rc.maxTotal {
		return &IntegrityError{Path: shown, Reason: fmt.Sprintf("the stream exceeds %d bytes, more than --max-bytes allows", rc.maxTotal)}
	}
	bound := int64(-1)
	switch hdr.Name {
	case SelfPath:
		bound = maxSelfJSON
	case SkippedPath:
		bound = maxSkippedJSON
	case ManifestPath:
		bound = maxManifestJSON
	case NodeBundlePath:
		bound = maxNodeJSON
	}
	if bound >= 0 && hdr.Size > bound {
		return &IntegrityError{Path: shown, Reason: fmt.Sprintf("%d bytes, more than the %d allowed", hdr.Size, bound)}
	}
	return nil
}

func (rc *receiver) entry(tr *tar.Reader, hdr *tar.Header, i int) error {
	// The collector's metadata is read whole (bounded above) to be checked before the sink sees it.
	var meta []byte
	if hdr.Name == SelfPath || hdr.Name == SkippedPath || hdr.Name == ManifestPath || (hdr.Name == NodeBundlePath && rc.prefixes != nil) {
		var err error
		if meta, err = io.ReadAll(tr); err != nil {
			return &IntegrityError{Path: hdr.Name, Reason: "truncated: " + err.Error()}
		}
	}
	switch hdr.Name {
	case SelfPath:
		if err := decodeStrict(meta, &rc.self); err != nil {
			return &IntegrityError{Path: SelfPath, Reason: "not valid JSON: " + err.Error()}
		}
		if rc.wantSHA256 != "" && rc.self.SHA256 != rc.wantSHA256 {
			return fmt.Errorf("%w: sent sha256:%s, the running collector hashed its executable as sha256:%s",
				ErrSelfHash, rc.wantSHA256, EscapeName(rc.self.SHA256))
		}
	case SkippedPath:
		var skips []Skip
		if err := decodeStrict(meta, &skips); err != nil {
			return &IntegrityError{Path: SkippedPath, Reason: "not valid JSON: " + err.Error()}
		}
		rc.res.Skipped = append(rc.res.Skipped, skips...)
	case NodeBundlePath:
		var n NodeInfo
		if err := decodeStrict(meta, &n); err != nil {
			return &IntegrityError{Path: NodeBundlePath, Reason: "not valid JSON: " + err.Error()}
		}
		rc.res.Node = &n
	case ManifestPath:
		var m Manifest
		if err := decodeStrict(meta, &m); err != nil {
			return &IntegrityError{Path: ManifestPath, Reason: "not valid JSON: " + err.Error()}
		}
		if err := rc.compare(&m); err != nil {
			return err
		}
		rc.manifest = &m
	}
	var body io.Reader = tr
	if meta != nil {
		body = bytes.NewReader(meta)
	}
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(body, h)}
	clean := &tar.Header{Typeflag: tar.TypeReg, Name: hdr.Name, Size: hdr.Size, Mode: 0o644,
		ModTime: sanitizeTime(hdr.ModTime), Format: tar.FormatPAX}
	if err := rc.sink.WriteEntry(clean, cr); err != nil {
		return fmt.Errorf("failed to store %s: %w", EscapeName(hdr.Name), err)
	}
	if rest, err := io.Copy(io.Discard, cr); err != nil {
		return &IntegrityError{Path: hdr.Name, Reason: "truncated: " + err.Error()}
	} else if rest > 0 {
		return fmt.Errorf("the sink stored %s without reading its last %d bytes", EscapeName(hdr.Name), rest)
	}
	if cr.n != hdr.Size {
		return &IntegrityError{Path: hdr.Name, Reason: fmt.Sprintf("%d bytes received, the header says %d", cr.n, hdr.Size)}
	}
	f := File{Path: hdr.Name, Size: cr.n, SHA256: hexSum(h)}
	rc.res.Files = append(rc.res.Files, f)
	return nil
}

// compare checks the manifest against every entry received so far (all but the manifest) and copies the
// collector's notes (source, original size and hash) into the result.
func (rc *receiver) compare(m *Manifest) error {
	got := rc.res.Files
	for i, f := range got {
		if i >= len(m.Files) {
			return &IntegrityError{Path: f.Path, Reason: "received but not in the collector's manifest"}
		}
		want := m.Files[i]
		if want.Path != f.Path {
			return &IntegrityError{Path: f.Path, Reason: "the manifest lists " + EscapeName(want.Path) + " at this place"}
		}
		if want.Size != f.Size || want.SHA256 != f.SHA256 {
			return &IntegrityError{Path: f.Path, Reason: fmt.Sprintf(
				"received %d bytes with sha256 %s, the collector hashed %d bytes as %s", f.Size, f.SHA256, want.Size,
				EscapeName(want.SHA256))}
		}
		got[i].Source, got[i].OrigSize, got[i].OrigSHA256, got[i].Note = want.Source, want.OrigSize, want.OrigSHA256, want.Note
	}
	if len(m.Files) > len(got) {
		return &IntegrityError{Path: EscapeName(m.Files[len(got)].Path), Reason: "in the collector's manifest but not received"}
	}
	return nil
}

func decodeStrict(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}

func sanitizeTime(t time.Time) time.Time {
	if t.Before(time.Unix(0, 0)) || t.After(time.Unix(1<<33, 0)) {
		return time.Unix(0, 0)
	}
	return t.Truncate(time.Second)
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
