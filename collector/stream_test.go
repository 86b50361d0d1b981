package collector

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

type tarEntry struct {
	name string
	typ  byte
	body []byte
}

func buildStream(t testing.TB, entries []tarEntry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Size: int64(len(e.body)), Mode: 0o644, Format: tar.FormatPAX}
		if typ != tar.TypeReg {
			hdr.Size, hdr.Linkname = 0, "/etc/passwd"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write(e.body)
		}
	}
	tw.Close()
	return buf.Bytes()
}

func selfEntry(sha string) tarEntry {
	b, _ := json.Marshal(SelfInfo{Mode: "collector", SHA256: sha})
	return tarEntry{name: SelfPath, body: b}
}

func manifestEntry(files ...tarEntry) tarEntry {
	m := Manifest{}
	for _, f := range files {
		m.Files = append(m.Files, File{Path: f.name, Size: int64(len(f.body)), SHA256: hexsha(f.body)})
	}
	b, _ := json.Marshal(m)
	return tarEntry{name: ManifestPath, body: b}
}

// Each stream an attacker inside the container could send instead of the collector's, and what must be said.
func TestReceiverRefuses(t *testing.T) {
	self := selfEntry("ab")
	a := tarEntry{name: "container/fs/etc/passwd", body: []byte("root:x:0:0\n")}
	b := tarEntry{name: "container/fs/etc/group", body: []byte("root:x:0:\n")}
	flipped := tarEntry{name: a.name, body: []byte("root:x:0:1\n")}
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		path    string
		reason  string
	}{
		{"flipped byte", []tarEntry{self, flipped, manifestEntry(self, a)}, a.name, "the collector hashed"},
		{"removed file", []tarEntry{self, a, manifestEntry(self, a, b)}, b.name, "in the collector's manifest but not received"},
		{"extra file", []tarEntry{self, a, b, manifestEntry(self, a)}, b.name, "received but not in the collector's manifest"},
		{"reordered", []tarEntry{self, b, a, manifestEntry(self, a, b)}, b.name, "the manifest lists"},
		{"no manifest", []tarEntry{self, a}, ManifestPath, "without a manifest"},
		{"entry after manifest", []tarEntry{self, manifestEntry(self), a}, a.name, "after the manifest"},
		{"not self first", []tarEntry{a, self, manifestEntry(a, self)}, a.name, "does not start with"},
		{"duplicate", []tarEntry{self, a, a, manifestEntry(self, a, a)}, a.name, "a second entry"},
		{"traversal", []tarEntry{self, {name: "container/../../etc/cron.d/x", body: []byte("x")}}, "container/../../etc/cron.d/x", "not an acceptable archive path"},
		{"absolute", []tarEntry{self, {name: "/etc/passwd", body: []byte("x")}}, "/etc/passwd", "not an acceptable archive path"},
		{"outside container/", []tarEntry{self, {name: "kubernetes/pod.json", body: []byte("{}")}}, "kubernetes/pod.json", "not an acceptable archive path"},
		{"control character", []tarEntry{self, {name: "container/a\nb", body: []byte("x")}}, "container/a%0Ab", "not an acceptable archive path"},
		{"symlink", []tarEntry{self, {name: "container/fs/x", typ: tar.TypeSymlink}}, "container/fs/x", "only regular files"},
		{"hard link", []tarEntry{self, {name: "container/fs/x", typ: tar.TypeLink}}, "container/fs/x", "only regular files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &receiver{sink: &entrySink{}, wantSHA256: "ab", maxTotal: -1, res: &Result{}}
			err := rc.receive(bytes.NewReader(buildStream(t, tc.entries)))
			var ie *IntegrityError
			if !errors.As(err, &ie) || ie.Path != tc.path || !strings.Contains(ie.Reason, tc.reason) {
				t.Fatalf("err = %v, want an integrity error on %s: %s", err, tc.path, tc.reason)
			}
		})
	}
	// Self-hash: refused before the sink sees anything.
	sink := &entrySink{}
	rc := &receiver{sink: sink, wantSHA256: "cd", maxTotal: -1, res: &Result{}}
	if err := rc.receive(bytes.NewReader(buildStream(t, []tarEntry{self, a, manifestEntry(self, a)}))); !errors.Is(err, ErrSelfHash) || len(sink.names) != 0 {
		t.Fatalf("err = %v, %d entries stored; want ErrSelfHash and none", err, len(sink.names))
	}
	// Oversized stream: refused at the header, before its body is read.
	rc = &receiver{sink: &entrySink{}, wantSHA256: "ab", maxTotal: 20, res: &Result{}}
	big := tarEntry{name: "container/fs/big", body: bytes.Repeat([]byte("x"), 100)}
	if err := rc.receive(bytes.NewReader(buildStream(t, []tarEntry{self, big}))); err == nil || !strings.Contains(err.Error(), "more than --max-bytes allows") {
		t.Fatalf("err = %v", err)
	}
	// Garbage after the archive's end.
	rc = &receiver{sink: &entrySink{}, wantSHA256: "ab", maxTotal: -1, res: &Result{}}
	stream := append(buildStream(t, []tarEntry{self, a, manifestEntry(self, a)}), []byte("trailing")...)
	if err := rc.receive(bytes.NewReader(stream)); err == nil || !strings.Contains(err.Error(), "after the end of the archive") {
		t.Fatalf("err = %v", err)
	}
}

// FuzzReceive feeds the acquirer-side parser arbitrary streams: it must never panic, never pass an unacceptable
// path or an entry whose bytes differ from what it reports, and only succeed with a manifest that matches.
func FuzzReceive(f *testing.F) {
	self := selfEntry("ab")
	a := tarEntry{name: "container/fs/etc/passwd", body: []byte("root:x:0:0\n")}
	f.Add(buildStream(f, []tarEntry{self, a, manifestEntry(self, a)}))
	f.Add(buildStream(f, []tarEntry{self, {name: "container/fs/x", typ: tar.TypeSymlink}}))
	f.Add(buildStream(f, []tarEntry{self, manifestEntry(self)}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		sink := &entrySink{}
		res := &Result{}
		rc := &receiver{sink: sink, wantSHA256: "ab", maxTotal: 1 << 20, res: res}
		err := rc.receive(bytes.NewReader(data))
		for _, name := range sink.names {
			if !validArchivePath(name) {
				t.Fatalf("unacceptable path %q reached the sink", name)
			}
		}
		for _, fl := range res.Files {
			if hexsha(sink.data[fl.Path]) != fl.SHA256 {
				t.Fatalf("%s: reported hash differs from the bytes stored", fl.Path)
			}
		}
		if err == nil && (len(sink.names) < 2 || sink.names[0] != SelfPath || sink.names[len(sink.names)-1] != ManifestPath) {
			t.Fatalf("accepted a stream of %v", sink.names)
		}
	})
}
