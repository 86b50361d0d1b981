package evidence

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Results of a target in the index.
const (
	ResultAcquired = "acquired" // acquired by this run; its statement verifies
	ResultKept     = "kept"     // acquired by an earlier run into the same place; its statement verified, kept as is
	ResultFailed   = "failed"   // not acquired (Reason says why); a partial archive may be left
	ResultPending  = "pending"  // not finished: the run was stopped before (or while) acquiring it
)

// Index is DIR/acquisition.json: every target of a run and its outcome. It is not signed; each target's statement
// is.
type Index struct {
	AcquisitionID string        `json:"acquisitionID"`
	Case          string        `json:"case,omitempty"`
	Examiner      string        `json:"examiner,omitempty"`
	Cluster       string        `json:"cluster"`
	Profile       string        `json:"profile"`
	StartedOn     time.Time     `json:"startedOn"`
	FinishedOn    time.Time     `json:"finishedOn,omitzero"`
	Caller        Caller        `json:"caller"`
	Targets       []IndexTarget `json:"targets"`
	// Requests are the run's own requests (finding targets, asking what the token may do); each target's are in its
	// statement.
	Requests []Request `json:"requests,omitempty"`
	Acquirer Acquirer  `json:"acquirer"`
}

// IndexTarget is one target's outcome.
type IndexTarget struct {
	Namespace  string    `json:"namespace"`
	Pod        string    `json:"pod"`
	Container  string    `json:"container"`
	Dir        string    `json:"dir"`
	Result     string    `json:"result"` // ResultAcquired, ResultKept or ResultFailed
	Reason     string    `json:"reason,omitempty"`
	Mode       string    `json:"mode,omitempty"`   // exec, ephemeral, node, volume
	Method     string    `json:"method,omitempty"` // collector or shell
	Files      int       `json:"files,omitempty"`
	Bytes      int64     `json:"bytes,omitempty"` // of evidence.tar
	SHA256     string    `json:"sha256,omitempty"`
	Skipped    int       `json:"skipped,omitempty"`
	StartedOn  time.Time `json:"startedOn,omitzero"`
	FinishedOn time.Time `json:"finishedOn,omitzero"`
}

// maxIndexBytes bounds acquisition.json.
const maxIndexBytes = 64 << 20

// WriteIndex writes DIR/acquisition.json, replacing the previous one at once.
func WriteIndex(ctx context.Context, store Store, idx *Index) error {
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	obj, err := store.Create(ctx, IndexName)
	if err != nil {
		return err
	}
	if _, err := obj.Write(append(data, '\n')); err != nil {
		obj.Close()
		return fmt.Errorf("cannot write %s: %w", store.Location(IndexName), err)
	}
	return obj.Commit()
}

// ReadIndex reads DIR/acquisition.json; a missing one is an error matching fs.ErrNotExist.
func ReadIndex(ctx context.Context, store Store) (*Index, error) {
	r, err := store.Open(ctx, IndexName)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxIndexBytes+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", err)
	}
	if len(data) > maxIndexBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxIndexBytes)
	}
	var idx Index
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&idx); err != nil {
		return nil, fmt.Errorf("not an acquisition index: %v", err)
	}
	for _, t := range idx.Targets {
		if t.Dir == "" && t.Result == ResultFailed {
			continue // a target that was never more than a name (a pod not found)
		}
		if want, err := TargetDir(t.Namespace, t.Pod, t.Container); err != nil || want != t.Dir {
			return nil, fmt.Errorf("target %q does not name its namespace/pod/container", clip(t.Dir))
		}
	}
	return &idx, nil
}
