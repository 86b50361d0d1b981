package download

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func get(t *testing.T, h http.Handler, method, path string) (int, http.Header, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Header(), rec.Body.String()
}

func TestServe(t *testing.T) {
	dir := t.TempDir()
	arm := []byte("arm64 binary")
	if err := os.WriteFile(filepath.Join(dir, "warren-linux-arm64"), arm, 0o755); err != nil {
		t.Fatal(err)
	}
	selfBytes := []byte("the gateway's own executable")
	self := filepath.Join(t.TempDir(), "warren")
	if err := os.WriteFile(self, selfBytes, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "warren-linux-arm64.sig"), []byte("arm64 signature"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := New(dir, self)
	h.platform = "linux-amd64" // as on a linux/amd64 gateway, whatever runs the test

	cases := []struct {
		name, method, path string
		code               int
		body               string // exact, "" to skip
		contains           string
	}{
		{"binary from dir", "GET", "/download/warren-linux-arm64", 200, string(arm), ""},
		{"digest from dir", "GET", "/download/warren-linux-arm64.sha256", 200, sumOf(arm) + "  warren-linux-arm64\n", ""},
		{"own platform from self", "GET", "/download/warren-linux-amd64", 200, string(selfBytes), ""},
		{"digest of self", "GET", "/download/warren-linux-amd64.sha256", 200, sumOf(selfBytes) + "  warren-linux-amd64\n", ""},
		{"head", "HEAD", "/download/warren-linux-arm64", 200, "", ""},
		{"unknown platform", "GET", "/download/warren-darwin-amd64", 404, "", `"kind":"Status"`},
		{"other name", "GET", "/download/passwd", 404, "", "this gateway serves /download/warren-linux-amd64, /download/warren-linux-arm64"},
		{"traversal", "GET", "/download/warren-linux-amd64/../../etc/passwd", 404, "", `"code":404`},
		{"index", "GET", "/download/", 404, "", `"reason":"NotFound"`},
		{"post", "POST", "/download/warren-linux-arm64", 405, "", `"code":405`},
		{"signature from dir", "GET", "/download/warren-linux-arm64.sig", 200, "arm64 signature", ""},
		{"no signature", "GET", "/download/warren-linux-amd64.sig", 404, "",
			`no release signature for warren-linux-amd64: sign the binary (warren sign --key RELEASE.key warren-linux-amd64) and put warren-linux-amd64.sig in the gateway's --download-dir`},
		{"signature of an unknown name", "GET", "/download/passwd.sig", 404, "", `"code":404`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, hdr, body := get(t, h, c.method, c.path)
			if code != c.code {
				t.Fatalf("status %d, want %d: %s", code, c.code, body)
			}
			if c.body != "" && body != c.body {
				t.Fatalf("body %q, want %q", body, c.body)
			}
			if c.contains != "" && !strings.Contains(body, c.contains) {
				t.Fatalf("body %q lacks %q", body, c.contains)
			}
			if code == 404 {
				var st struct{ Kind, Status string }
				if err := json.Unmarshal([]byte(body), &st); err != nil || st.Kind != "Status" || st.Status != "Failure" {
					t.Fatalf("404 body is not a Status: %q", body)
				}
			}
			if c.method == "HEAD" && hdr.Get("Content-Length") != "12" {
				t.Fatalf("HEAD Content-Length %q", hdr.Get("Content-Length"))
			}
		})
	}
}

// The directory wins over the executable for the gateway's own platform.
func TestDirOverridesSelf(t *testing.T) {
	dir := t.TempDir()
	platform := runtime.GOOS + "-" + runtime.GOARCH
	if !known(platform) {
		platform = "linux-amd64"
	}
	if err := os.WriteFile(filepath.Join(dir, BinaryName(platform)), []byte("from dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	self := filepath.Join(t.TempDir(), "self")
	os.WriteFile(self, []byte("self"), 0o755)
	h := New(dir, self)
	h.platform = platform
	if _, _, body := get(t, h, "GET", Prefix+BinaryName(platform)); body != "from dir" {
		t.Fatalf("got %q", body)
	}
}

func TestNothingToServe(t *testing.T) {
	code, _, body := get(t, New("", ""), "GET", "/download/warren-linux-amd64")
	if code != 404 || !strings.Contains(body, "serves no connector binary: start it with --download-dir") {
		t.Fatalf("%d %s", code, body)
	}
}

// A digest is computed once per file version: the cache is used while the file is unchanged, and a replaced or
// rewritten file is hashed again.
func TestDigestCache(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "warren-linux-arm64")
	write := func(b []byte, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	write([]byte("version one"), base)
	h := New(dir, "")
	digestOf := func() string {
		_, _, body := get(t, h, "GET", "/download/warren-linux-arm64.sha256")
		return strings.Fields(body)[0]
	}
	if got := digestOf(); got != sumOf([]byte("version one")) {
		t.Fatalf("first digest %s", got)
	}
	// Poison the cache entry: an unchanged file is answered from it, so the poison shows.
	h.mu.Lock()
	d := h.hashes[path]
	d.sum = "cached"
	h.hashes[path] = d
	h.mu.Unlock()
	if got := digestOf(); got != "cached" {
		t.Fatalf("unchanged file was hashed again: %s", got)
	}
	// Same size, new content and modification time: hashed again.
	write([]byte("version two"), base.Add(time.Minute))
	if got := digestOf(); got != sumOf([]byte("version two")) {
		t.Fatalf("digest after rewrite %s", got)
	}
	// Replaced by rename (new inode), even with the old modification time.
	tmp := filepath.Join(dir, "new")
	os.WriteFile(tmp, []byte("version 3!!"), 0o755)
	os.Chtimes(tmp, base.Add(time.Minute), base.Add(time.Minute))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if got := digestOf(); got != sumOf([]byte("version 3!!")) {
		t.Fatalf("digest after replace %s", got)
	}
}

// Range requests work, so an interrupted download can resume (curl -C -).
func TestRange(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "warren-linux-arm64"), []byte("0123456789"), 0o755)
	srv := httptest.NewServer(New(dir, ""))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/download/warren-linux-arm64", nil)
	req.Header.Set("Range", "bytes=4-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusPartialContent || string(b) != "456789" {
		t.Fatalf("%s %q", resp.Status, b)
	}
}
