// Package download serves the connector binaries that bootstrap scripts fetch from the gateway:
// GET /download/warren-linux-amd64 and /download/warren-linux-arm64, each with a sha256sum-style digest at
// /download/<name>.sha256 and, when the download directory holds one, its release signature at
// /download/<name>.sig (SignFile).
//
// A binary comes from the download directory when it holds a file of that name, else, for the gateway's own
// platform, from the gateway's own executable: a gateway built for linux/amd64 serves itself as warren-linux-amd64
// with no set-up at all.
package download

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/warren-dev/warren/internal/wire"
)

// Prefix is the path under which the gateway mounts the handler.
const Prefix = "/download/"

// Platforms are the platforms a connector binary is served for, as GOOS-GOARCH.
var Platforms = []string{"linux-amd64", "linux-arm64"}

// BinaryName returns the download name of the connector binary for a platform: warren-linux-amd64.
func BinaryName(platform string) string { return "warren-" + platform }

// Handler serves the binaries. It is safe for concurrent use.
type Handler struct {
	dir      string // "" for none
	self     string // the running executable's path, "" for none
	platform string // the platform self was built for, GOOS-GOARCH

	mu     sync.Mutex
	hashes map[string]digest // by path; Owned by mu
}

// digest is a file's SHA-256 and the identity of the file version it was computed from: a replaced or rewritten
// file has another inode, size or modification time, and is hashed again.
type digest struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
	sum      string // hex
}

// New returns a handler serving the binaries in dir (may be "") and, for runtime.GOOS-runtime.GOARCH when dir
// lacks it, the executable at self (may be ""; usually os.Executable()).
func New(dir, self string) *Handler {
	return &Handler{dir: dir, self: self, platform: runtime.GOOS + "-" + runtime.GOARCH, hashes: map[string]digest{}}
}

// ServeHTTP answers GET and HEAD of Prefix + name, Prefix + name + ".sha256" and Prefix + name + ".sig"; anything
// else gets a 404 (405 for other methods) as a Kubernetes Status.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		wire.WriteStatus(w, http.StatusMethodNotAllowed, "downloads are GET only", 0)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		h.notFound(w, r.URL.Path)
		return
	}
	if base, ok := strings.CutSuffix(name, SignatureSuffix); ok {
		h.serveSignature(w, r, base)
		return
	}
	base, wantSum := strings.CutSuffix(name, ".sha256")
	path := h.path(base)
	if path == "" {
		h.notFound(w, r.URL.Path)
		return
	}
	f, fi, err := openRegular(path)
	if errors.Is(err, fs.ErrNotExist) {
		h.notFound(w, r.URL.Path)
		return
	}
	if err != nil {
		wire.WriteStatus(w, http.StatusInternalServerError, fmt.Sprintf("cannot open %s: %v", base, err), 0)
		return
	}
	defer f.Close()
	w.Header().Set("Cache-Control", "no-cache") // revalidate: a new release replaces the file under the same name
	if !wantSum {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+base+`"`)
		http.ServeContent(w, r, base, fi.ModTime(), f)
		return
	}
	sum, err := h.sum(path, f, fi)
	if err != nil {
		wire.WriteStatus(w, http.StatusInternalServerError, fmt.Sprintf("cannot hash %s: %v", base, err), 0)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	body := sum + "  " + base + "\n" // the format of sha256sum, so `sha256sum -c` reads it
	http.ServeContent(w, r, name, fi.ModTime(), strings.NewReader(body))
}

// serveSignature serves base's release signature from the download directory only: whoever signs the release
// puts it there (the gateway never holds the release key).
func (h *Handler) serveSignature(w http.ResponseWriter, r *http.Request, base string) {
	platform, ok := strings.CutPrefix(base, "warren-")
	if !ok || !known(platform) {
		h.notFound(w, r.URL.Path)
		return
	}
	missing := func() {
		wire.WriteStatus(w, http.StatusNotFound, fmt.Sprintf("no release signature for %s: sign the binary (warren sign --key RELEASE.key %s) "+
			"and put %s%s in the gateway's --download-dir", base, base, base, SignatureSuffix), 0)
	}
	if h.dir == "" {
		missing()
		return
	}
	f, fi, err := openRegular(filepath.Join(h.dir, base+SignatureSuffix))
	if errors.Is(err, fs.ErrNotExist) {
		missing()
		return
	}
	if err != nil {
		wire.WriteStatus(w, http.StatusInternalServerError, fmt.Sprintf("cannot open the signature of %s: %v", base, err), 0)
		return
	}
	defer f.Close()
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, base+SignatureSuffix, fi.ModTime(), f)
}

// openRegular opens the regular file at path; anything else (missing, a directory, a device) is fs.ErrNotExist.
func openRegular(path string) (*os.File, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// path returns the file that serves download name base, or "" when base is not a served name.
func (h *Handler) path(base string) string {
	platform, ok := strings.CutPrefix(base, "warren-")
	if !ok || !known(platform) {
		return ""
	}
	if h.dir != "" {
		p := filepath.Join(h.dir, base)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if platform == h.platform && h.self != "" {
		return h.self
	}
	return ""
}

func known(platform string) bool {
	for _, p := range Platforms {
		if p == platform {
			return true
		}
	}
	return false
}

func (h *Handler) notFound(w http.ResponseWriter, path string) {
	var names []string
	for _, p := range Platforms {
		if h.path(BinaryName(p)) != "" {
			names = append(names, Prefix+BinaryName(p))
		}
	}
	msg := fmt.Sprintf("no download at %q", path)
	if len(names) > 0 {
		msg += "; this gateway serves " + strings.Join(names, ", ") + " (and .sha256 of each)"
	} else {
		msg += "; this gateway serves no connector binary: start it with --download-dir"
	}
	wire.WriteStatus(w, http.StatusNotFound, msg, 0)
}

// sum returns the hex SHA-256 of the open file f at path, from the cache when f is the version last hashed.
func (h *Handler) sum(path string, f *os.File, fi os.FileInfo) (string, error) {
	d := digest{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		d.dev, d.ino = uint64(st.Dev), uint64(st.Ino)
	}
	h.mu.Lock()
	cached, ok := h.hashes[path]
	h.mu.Unlock()
	if ok && cached.dev == d.dev && cached.ino == d.ino && cached.size == d.size && cached.mtime.Equal(d.mtime) {
		return cached.sum, nil
	}
	// Hashed outside the lock: two first requests may both hash, which is harmless; none waits on another's read.
	hash := sha256.New()
	if _, err := io.Copy(hash, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return "", err
	}
	d.sum = hex.EncodeToString(hash.Sum(nil))
	h.mu.Lock()
	h.hashes[path] = d
	h.mu.Unlock()
	return d.sum, nil
}
