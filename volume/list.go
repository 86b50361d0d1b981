package volume

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/warren-dev/warren/internal/bytesize"
)

// Listing is what a containerd root holds, for `--list`.
type Listing struct {
	Path          string            `json:"containerdRoot"`
	Layout        string            `json:"layout"`
	MetaDB        DBInfo            `json:"metaDB"`
	SchemaVersion int64             `json:"schemaVersion"`
	Namespaces    []ListedNS        `json:"namespaces"`
	Snapshotters  map[string]DBInfo `json:"snapshotters,omitempty"`
	// Problems are what could not be read (a snapshotter database that is missing or corrupt); the rest is listed.
	Problems []string `json:"problems,omitempty"`
}

// ListedNS is one namespace of a Listing.
type ListedNS struct {
	Name       string            `json:"name"`
	Labels     map[string]string `json:"labels,omitempty"`
	Containers []ListedContainer `json:"containers"`
	Images     []*Image          `json:"images"`
	Blobs      int               `json:"blobs"` // content blobs the namespace references
}

// ListedContainer is one container of a Listing: its record (without the spec and extensions, which the export
// carries) and snapshot chain.
type ListedContainer struct {
	Container
	// Target is where `warren acquire volume --container ID` writes it: namespace/pod/container.
	Target string `json:"target"`
	// Chain is its snapshots, the writable one first.
	Chain []Snapshot `json:"snapshots,omitempty"`
	// Unsupported is "" when the volume mode can export it, else why not.
	Unsupported string `json:"unsupported,omitempty"`
}

// List lists the namespaces, containers (with their snapshot chains) and images of the root.
func (v *Volume) List() *Listing {
	l := &Listing{Path: v.Path, Layout: v.Layout, MetaDB: v.MetaDB, SchemaVersion: v.SchemaVersion, Snapshotters: map[string]DBInfo{}}
	infos := map[string]map[string]snapshotInfo{}
	for _, n := range v.state.Namespaces {
		ln := ListedNS{Name: n.Name, Labels: n.Labels, Images: n.Images, Blobs: len(n.Blobs), Containers: []ListedContainer{}}
		if ln.Images == nil {
			ln.Images = []*Image{}
		}
		for _, c := range n.Containers {
			ns, pod, name := TargetNames(c)
			lc := ListedContainer{Container: *c, Target: ns + "/" + pod + "/" + name}
			lc.Spec, lc.SpecType, lc.Extensions = nil, "", nil
			p := &plan{c: c, ns: n, snapshotter: c.Snapshotter}
			if p.snapshotter == "" {
				p.snapshotter = p.findSnapshotter()
			}
			switch p.snapshotter {
			case SnapshotterOverlay, SnapshotterNative:
				p.snapDir = snapshotterDir + p.snapshotter
				si, ok := infos[p.snapshotter]
				if !ok {
					var err error
					if si, err = v.readSnapshotter(p); err != nil {
						l.Problems = append(l.Problems, err.Error())
						si = map[string]snapshotInfo{}
					} else if p.snapDB.Path != "" {
						l.Snapshotters[p.snapshotter] = p.snapDB
					}
					infos[p.snapshotter] = si
				}
				p.chainOf(si, v)
				lc.Chain = p.chain
			case "":
				lc.Unsupported = "no snapshotter"
			default:
				why, ok := unsupportedSnapshotters[p.snapshotter]
				if !ok {
					why = p.snapshotter
				}
				lc.Unsupported = "snapshotter " + why
			}
			ln.Containers = append(ln.Containers, lc)
		}
		l.Namespaces = append(l.Namespaces, ln)
	}
	return l
}

// Listing formats (`warren acquire volume --list -o`).
const (
	FormatTable = "table"
	FormatJSON  = "json"
)

// Write writes the listing as tables (FormatTable: the containers with their snapshot chains, then the images,
// then the problems) or as indented JSON (FormatJSON).
func (l *Listing) Write(w io.Writer, format string) error {
	if format == FormatJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(l)
	}
	fmt.Fprintf(w, "containerd root %s (layout %s), meta.db %s, sha256 %s\n\n", l.Path, l.Layout, bytesize.Format(l.MetaDB.Size), l.MetaDB.SHA256)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tCONTAINER\tTARGET\tIMAGE\tSNAPSHOTTER\tSNAPSHOTS\tCREATED")
	for _, n := range l.Namespaces {
		for _, c := range n.Containers {
			snaps := fmt.Sprintf("%d", len(c.Chain))
			missing := 0
			for _, s := range c.Chain {
				if !s.Exists {
					missing++
				}
			}
			if missing > 0 {
				snaps += fmt.Sprintf(" (%d missing)", missing)
			}
			if c.Unsupported != "" {
				snaps = "unsupported: " + c.Unsupported
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, c.ID, c.Target, c.Image, c.Snapshotter, snaps, c.CreatedAt.UTC().Format(time.RFC3339))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tIMAGE\tTARGET\tMEDIA TYPE")
	for _, n := range l.Namespaces {
		for _, img := range n.Images {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, img.Name, img.Target.Digest, img.Target.MediaType)
		}
	}
	tw.Flush()
	for _, p := range l.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	return nil
}

// PrintList opens the containerd root of cfg and writes its Listing to w in format (`warren acquire volume --list`).
func PrintList(cfg Config, format string, w io.Writer) error {
	v, err := Open(cfg)
	if err != nil {
		return err
	}
	defer v.Close()
	return v.List().Write(w, format)
}
