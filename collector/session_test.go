package collector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func sealed(t *testing.T, key, plain []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := newSealWriter(&buf, key)
	if err != nil {
		t.Fatal(err)
	}
	// Odd write sizes cross frame boundaries.
	for len(plain) > 0 {
		n := min(len(plain), 7919)
		if _, err := w.Write(plain[:n]); err != nil {
			t.Fatal(err)
		}
		plain = plain[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(key, data []byte) ([]byte, error) {
	r, err := newOpenReader(bytes.NewReader(data), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// frames splits a sealed stream into its frames (after the magic).
func frames(data []byte) [][]byte {
	data = data[len(SealMagic):]
	var out [][]byte
	for len(data) >= 4 {
		l := int(binary.BigEndian.Uint32(data[:4]))
		out = append(out, data[:4+l])
		data = data[4+l:]
	}
	return out
}

// TestSealRoundTrip: what is sealed opens to the same bytes, empty and across many frames.
func TestSealRoundTrip(t *testing.T) {
	key := NewSessionKey()
	for _, n := range []int{0, 1, sealChunk - 1, sealChunk, sealChunk + 1, 5*sealChunk + 123} {
		plain := bytes.Repeat([]byte("evidence "), n/9+1)[:n]
		got, err := open(key, sealed(t, key, plain))
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: %v (got %d bytes)", n, err, len(got))
		}
	}
}

// TestSealTampering: every way to change a sealed stream fails with ErrSealed, saying how.
func TestSealTampering(t *testing.T) {
	key := NewSessionKey()
	plain := bytes.Repeat([]byte("x"), 3*sealChunk+10)
	good := sealed(t, key, plain)
	fr := frames(good)
	if len(fr) != 4 {
		t.Fatalf("%d frames", len(fr))
	}
	join := func(parts ...[]byte) []byte { return append([]byte(SealMagic), bytes.Join(parts, nil)...) }
	flipped := append([]byte(nil), good...)
	flipped[len(SealMagic)+100] ^= 1
	huge := join(fr[0], []byte{0xff, 0xff, 0xff, 0xff})
	for _, c := range []struct {
		name string
		data []byte
		key  []byte
		want string
	}{
		{"wrong key", good, NewSessionKey(), "frame 0 does not authenticate"},
		{"flipped byte", flipped, key, "frame 0 does not authenticate"},
		{"cut after a frame", join(fr[0], fr[1]), key, "the stream ended after 2 frames, before its final frame: it was cut"},
		{"cut inside a frame", good[:len(good)-5], key, "frame 3 cut short"},
		{"frames swapped", join(fr[1], fr[0], fr[2], fr[3]), key, "frame 0 does not authenticate"},
		{"a frame dropped", join(fr[0], fr[2], fr[3]), key, "frame 1 does not authenticate"},
		{"a frame replayed", join(fr[0], fr[0], fr[1], fr[2], fr[3]), key, "frame 1 does not authenticate"},
		{"data after the final frame", append(append([]byte(nil), good...), 0), key, "data after the final frame"},
		{"a second stream after the first", append(append([]byte(nil), good...), good...), key, "data after the final frame"},
		{"no magic", good[len(SealMagic):], key, "the stream does not start with"},
		{"nothing", nil, key, "the stream ended before its start marker"},
		{"an oversized frame", huge, key, "frame 1 of 4294967295 bytes (at most 65552)"},
		{"plaintext", []byte("collector/self.json\x00..."), key, "the stream does not start with"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := open(c.key, c.data)
			if !errors.Is(err, ErrSealed) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v\nwant ErrSealed with %q", err, c.want)
			}
		})
	}
}

// TestHandshake: the session line is read exactly (nothing after it consumed); anything else is refused.
func TestHandshake(t *testing.T) {
	key := NewSessionKey()
	r := strings.NewReader(HandshakeLine(key) + "rest")
	got, err := readHandshake(r)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("%v %x", err, got)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "rest" {
		t.Fatalf("consumed past the line: %q left", rest)
	}
	for _, c := range []struct{ in, want string }{
		{"", "EOF"},
		{"hello\n", "stdin does not start with a warren session line"},
		{"WARREN-COLLECTOR 2 " + strings.Repeat("00", 32) + "\n", `session protocol version "2"; this collector speaks 1`},
		{"WARREN-COLLECTOR 1 abcd\n", "the session key is not 32 hex-encoded bytes"},
		{"WARREN-COLLECTOR 1 " + strings.Repeat("zz", 32) + "\n", "the session key is not 32 hex-encoded bytes"},
		{"WARREN-COLLECTOR 1 " + strings.Repeat("00", 32) + " extra\n", "stdin does not start with a warren session line"},
		{strings.Repeat("A", 1000), "the session line is longer than 256 bytes"},
	} {
		if _, err := readHandshake(strings.NewReader(c.in)); err == nil || err.Error() != c.want {
			t.Errorf("%.40q: %v, want %q", c.in, err, c.want)
		}
	}
	// A collector nobody attaches to gives up, having written nothing.
	pr, pw := io.Pipe()
	defer pw.Close()
	if _, err := waitSession(pr, 50*time.Millisecond); err == nil || err.Error() != "no acquirer attached within 50ms" {
		t.Fatalf("wait: %v", err)
	}
}

// TestParseModeArgs: Args round-trips; values that would lead the collector elsewhere are refused.
func TestParseModeArgs(t *testing.T) {
	m := ModeArgs{Mode: ModeNode, ContainerID: "4f1c0e9a", Namespace: "k8s.io", RuntimeDir: DefaultRuntimeDir,
		ContainerdRoot: DefaultContainerdRoot, Options: Options{Profile: ProfileFull, TimeBudget: time.Minute}, Wait: time.Minute}
	got, err := ParseModeArgs(m.Args())
	if err != nil || got.ContainerID != m.ContainerID || got.RuntimeDir != m.RuntimeDir || got.Options.Profile != ProfileFull {
		t.Fatalf("%v %+v", err, got)
	}
	e := ModeArgs{Mode: ModeEphemeral, TargetContainerID: "abc", AsTargetUser: true}
	if got, err := ParseModeArgs(e.Args()); err != nil || !got.AsTargetUser || got.TargetContainerID != "abc" {
		t.Fatalf("ephemeral: %v %+v", err, got)
	}
	base := []string{"node", "--namespace=k8s.io", "--runtime-dir=" + DefaultRuntimeDir, "--containerd-root=" + DefaultContainerdRoot}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"collect"}, `mode "collect": want ephemeral or node`},
		{append(base, "--container-id=../../etc"), `--container-id "../../etc": not a containerd container id`},
		{append(base, "--container-id=a/b"), `--container-id "a/b": not a containerd container id`},
		{append(base, "--container-id=.hidden"), `--container-id ".hidden": not a containerd container id`},
		{append(base, "--container-id=a", "--container-id=b"), `invalid value "b" for flag -container-id: given twice`},
		{append(base, "--container-id=a", "--runtime-dir=/"), `invalid value "/" for flag -runtime-dir: given twice`},
		{[]string{"node", "--container-id=a", "--namespace=k8s.io", "--runtime-dir=/run/../etc", "--containerd-root=/var/lib/containerd"},
			`--runtime-dir "/run/../etc": want an absolute, clean directory path`},
		{[]string{"node", "--container-id=a", "--namespace=k8s.io", "--runtime-dir=/run/x", "--containerd-root=relative"},
			`--containerd-root "relative": want an absolute, clean directory path`},
		{append(base, "--container-id=a", "--root=/proc/1/root"), "flag provided but not defined: -root"},
		{append(base, "--container-id=a", "--pid=1"), "flag provided but not defined: -pid"},
		{append(base, "--container-id=a", "extra"), `unexpected argument "extra"`},
		{append(base, "--container-id=a", "--wait=0s"), "--wait 0s: must be positive"},
		{[]string{"ephemeral", "--container-id=a"}, "flag provided but not defined: -container-id"},
	} {
		if _, err := ParseModeArgs(c.args); err == nil || err.Error() != c.want {
			t.Errorf("%v: %v\nwant %q", c.args, err, c.want)
		}
	}
}

// TestStatusIDs reads the user, group and groups of /proc/PID/status.
func TestStatusIDs(t *testing.T) {
	u, g, gs, err := statusIDs("Name:\tapp\nUid:\t1000\t1000\t1000\t1000\nGid:\t2000\t2000\t2000\t2000\nGroups:\t3000 3001 \n")
	if err != nil || u != 1000 || g != 2000 || len(gs) != 2 || gs[0] != 3000 || gs[1] != 3001 {
		t.Fatalf("%d %d %v %v", u, g, gs, err)
	}
	if _, _, _, err := statusIDs("Name:\tx\n"); err == nil {
		t.Fatal("no Uid line accepted")
	}
	if _, _, _, err := statusIDs("Uid:\tx\nGid:\t0\n"); err == nil {
		t.Fatal("a bad Uid accepted")
	}
}

// TestDetectSnapshot: the root mounts of each snapshotter as their mount tables show them, told apart; everything
// but containerd's overlayfs is refused naming what it is.
func TestDetectSnapshot(t *testing.T) {
	root := "/var/lib/containerd"
	snaps := root + "/io.containerd.snapshotter.v1.overlayfs/snapshots"
	for _, c := range []struct {
		name   string
		m      mount
		want   string // snapshotter, or the error's text
		lowers []string
	}{
		{"overlayfs", mount{FSType: "overlay", SuperOptions: "rw,lowerdir=" + snaps + "/2/fs:" + snaps + "/1/fs,upperdir=" + snaps + "/3/fs,workdir=" + snaps + "/3/work"},
			"overlayfs", []string{snaps + "/2/fs", snaps + "/1/fs"}},
		{"relative lowerdirs", mount{FSType: "overlay", SuperOptions: "rw,lowerdir=2/fs:1/fs,upperdir=" + snaps + "/3/fs,workdir=" + snaps + "/3/work"},
			"overlayfs", []string{snaps + "/2/fs", snaps + "/1/fs"}},
		{"stargz", mount{FSType: "overlay", SuperOptions: "rw,lowerdir=/var/lib/containerd-stargz-grpc/snapshotter/snapshots/2/fs,upperdir=/var/lib/containerd-stargz-grpc/snapshotter/snapshots/3/fs"},
			"unsupported snapshotter: the stargz snapshotter (lazily pulled", nil},
		{"soci", mount{FSType: "overlay", SuperOptions: "rw,lowerdir=/var/lib/soci-snapshotter-grpc/snapshotter/snapshots/2/fs,upperdir=/var/lib/soci-snapshotter-grpc/snapshotter/snapshots/3/fs"},
			"unsupported snapshotter: the SOCI snapshotter", nil},
		{"gcfs", mount{FSType: "overlay", SuperOptions: "rw,lowerdir=" + root + "/io.containerd.snapshotter.v1.gcfs/snapshotter/snapshots/2/fs,upperdir=" + root + "/io.containerd.snapshotter.v1.gcfs/snapshotter/snapshots/3/fs"},
			"unsupported snapshotter: GKE image streaming (gcfs", nil},
		{"another overlay snapshotter", mount{FSType: "overlay", SuperOptions: "rw,lowerdir=" + root + "/io.containerd.snapshotter.v1.nydus/snapshots/2/fs,upperdir=" + root + "/io.containerd.snapshotter.v1.nydus/snapshots/3/fs"},
			"unsupported snapshotter: the nydus snapshotter", nil},
		{"an upperdir outside", mount{FSType: "overlay", SuperOptions: "rw,lowerdir=" + snaps + "/1/fs,upperdir=/tmp/x/fs"},
			"unsupported snapshotter: a writable layer outside " + snaps + " (/tmp/x/fs)", nil},
		{"a lowerdir escaping", mount{FSType: "overlay", SuperOptions: "rw,lowerdir=../../../../etc,upperdir=" + snaps + "/3/fs"},
			"unsupported snapshotter: an image layer outside", nil},
		{"fuse-overlayfs", mount{FSType: "fuse.fuse-overlayfs", Source: "fuse-overlayfs"},
			"unsupported snapshotter: its root is a FUSE file system (fuse.fuse-overlayfs", nil},
		{"devmapper", mount{FSType: "ext4", Source: "/dev/mapper/containerd-pool-snap-3"},
			"unsupported snapshotter: its root is a ext4 mount of /dev/mapper/containerd-pool-snap-3 that is no snapshot", nil},
		{"read-only view", mount{FSType: "overlay", SuperOptions: "ro,lowerdir=" + snaps + "/2/fs:" + snaps + "/1/fs"},
			"overlayfs", []string{snaps + "/2/fs", snaps + "/1/fs"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			info := &NodeInfo{}
			err := detectSnapshot(info, c.m, root, unix.Stat_t{})
			if c.want == "overlayfs" {
				if err != nil || info.Snapshotter != c.want || strings.Join(info.Lowers, ":") != strings.Join(c.lowers, ":") {
					t.Fatalf("%v %+v", err, info)
				}
				return
			}
			if !errors.Is(err, ErrUnsupportedSnapshotter) || !strings.HasPrefix(err.Error(), c.want) || !strings.HasSuffix(err.Error(), UnsupportedNote) {
				t.Fatalf("%v\nwant %q...", err, c.want)
			}
		})
	}
}

// BenchmarkSealOpen measures sealing and opening a stream (what the ephemeral and node modes add to exec's).
func BenchmarkSealOpen(b *testing.B) {
	key := NewSessionKey()
	chunk := bytes.Repeat([]byte("evidence"), 32<<10/8)
	const total = 64 << 20
	b.SetBytes(total)
	for b.Loop() {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			w, err := newSealWriter(pw, key)
			for n := 0; err == nil && n < total; n += len(chunk) {
				_, err = w.Write(chunk)
			}
			if err == nil {
				err = w.Close()
			}
			pw.CloseWithError(err)
			done <- err
		}()
		r, _ := newOpenReader(pr, key)
		if n, err := io.Copy(io.Discard, r); err != nil || n != total {
			b.Fatal(n, err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}
