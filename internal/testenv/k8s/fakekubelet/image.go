package fakekubelet

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/distribution/reference"
)

// An image is a directory NAME in one of Config.ImageDirs holding rootfs/ (the tree) and, optionally, config.json
// (imageConfig). A pod's image reference names it by the last element of its repository path: busybox,
// docker.io/library/busybox:1.36 and registry.example/tools/busybox@sha256:... all are image "busybox". There is no
// pull, no registry, no layer: a missing directory is the container's ErrImagePull.

// imageConfig is the part of an OCI image config that a container's process takes its defaults from.
type imageConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
	User       string   `json:"User,omitempty"` // uid, uid:gid or a name from the image's /etc/passwd
}

// image is a resolved image reference.
type image struct {
	ref    string // as the status reports it: docker.io/library/busybox:latest
	id     string // as the status reports it: docker.io/library/busybox@sha256:DIGEST of the directory
	rootfs string
	config imageConfig
}

// imageError is why a container has no image: reason is the waiting reason the kubelet reports.
type imageError struct {
	reason, message string
}

func (e *imageError) Error() string { return e.message }

// imageStore resolves references in its directories and remembers each directory's digest.
type imageStore struct {
	dirs []string

	mu      sync.Mutex
	digests map[string]*imageDigest // by image directory
}

type imageDigest struct {
	once   sync.Once
	digest string
	err    error
}

// resolve finds the image of ref.
func (s *imageStore) resolve(ref string) (*image, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, &imageError{"InvalidImageName",
			fmt.Sprintf("Failed to apply default image tag %q: couldn't parse image name %q: %v", ref, ref, err)}
	}
	name := path.Base(reference.Path(named))
	var dir string
	for _, d := range s.dirs {
		if fi, err := os.Stat(filepath.Join(d, name, "rootfs")); err == nil && fi.IsDir() {
			dir = filepath.Join(d, name)
			break
		}
	}
	if dir == "" {
		return nil, &imageError{"ErrImagePull", fmt.Sprintf("fakekubelet: image %q (%s) not found: no directory %s/rootfs "+
			"in the image directories %q; scripts/rootfs.sh builds busybox, busybox-notools, debian and distroless",
			ref, name, name, s.dirs)}
	}
	img := &image{ref: reference.TagNameOnly(named).String(), rootfs: filepath.Join(dir, "rootfs")}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err == nil {
		err = json.Unmarshal(b, &img.config)
	} else if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err != nil {
		return nil, &imageError{"ErrImagePull", fmt.Sprintf("fakekubelet: image %q: bad config.json: %v", ref, err)}
	}
	digest, err := s.digest(dir)
	if err != nil {
		return nil, &imageError{"ErrImagePull", fmt.Sprintf("fakekubelet: image %q: %v", ref, err)}
	}
	img.id = named.Name() + "@sha256:" + digest
	return img, nil
}

// digest is the SHA-256 of the image directory's contents (each entry's path, type, mode, owner, link target and
// content, in lexical order), computed once per directory.
func (s *imageStore) digest(dir string) (string, error) {
	s.mu.Lock()
	if s.digests == nil {
		s.digests = map[string]*imageDigest{}
	}
	d := s.digests[dir]
	if d == nil {
		d = &imageDigest{}
		s.digests[dir] = d
	}
	s.mu.Unlock()
	d.once.Do(func() { d.digest, d.err = hashTree(dir) })
	return d.digest, d.err
}

func hashTree(dir string) (string, error) {
	h := sha256.New()
	w := bufio.NewWriter(h)
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var uid, gid uint32
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = st.Uid, st.Gid
		}
		fmt.Fprintf(w, "%s\x00%v\x00%d:%d\x00", rel, fi.Mode(), uid, gid)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			w.WriteString(target)
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			fh := sha256.New()
			_, err = io.Copy(fh, f)
			f.Close()
			if err != nil {
				return err
			}
			w.WriteString(hex.EncodeToString(fh.Sum(nil)))
		}
		return w.WriteByte('\n')
	})
	if err != nil {
		return "", fmt.Errorf("failed to read the image directory: %w", err)
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// imageUser resolves the image's User (uid, uid:gid, name or name:group) against its /etc/passwd and /etc/group.
// Empty is root. ok is false for a name that is not there.
func (img *image) user() (uid, gid uint32, name string, err error) {
	u := img.config.User
	if u == "" {
		return 0, 0, "", nil
	}
	userPart, groupPart, hasGroup := strings.Cut(u, ":")
	if n, perr := strconv.ParseUint(userPart, 10, 32); perr == nil {
		uid = uint32(n)
		if e, ok := img.passwdEntry(func(f []string) bool { return f[2] == userPart }); ok {
			gid = parseID(e[3])
		}
	} else {
		e, ok := img.passwdEntry(func(f []string) bool { return f[0] == userPart })
		if !ok {
			return 0, 0, userPart, fmt.Errorf("unable to find user %s: no matching entries in passwd file", userPart)
		}
		uid, gid, name = parseID(e[2]), parseID(e[3]), userPart
	}
	if hasGroup {
		if n, perr := strconv.ParseUint(groupPart, 10, 32); perr == nil {
			gid = uint32(n)
		} else if e, ok := img.fileEntry("etc/group", func(f []string) bool { return f[0] == groupPart }); ok {
			gid = parseID(e[2])
		} else {
			return 0, 0, name, fmt.Errorf("unable to find group %s: no matching entries in group file", groupPart)
		}
	}
	return uid, gid, name, nil
}

// passwdEntry returns the first /etc/passwd entry of the image that match accepts.
func (img *image) passwdEntry(match func([]string) bool) ([]string, bool) {
	return img.fileEntry("etc/passwd", match)
}

// fileEntry returns the colon-separated fields of the first line of the image file rel that match accepts (lines
// with fewer than 4 fields are skipped).
func (img *image) fileEntry(rel string, match func([]string) bool) ([]string, bool) {
	f, err := os.Open(filepath.Join(img.rootfs, rel))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 4 && match(fields) {
			return fields, true
		}
	}
	return nil, false
}

func parseID(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}
