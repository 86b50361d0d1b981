package collector

import (
	"context"
	"errors"
)

// Collect runs one collection in one container and returns what it did. Each entry's bytes are hashed as they pass
// and compared with the collector's own manifest at the end: a mismatch is an ErrIntegrity naming the file. A
// Result is returned with the error whenever something was collected, so a caller can record a partial target.
func Collect(ctx context.Context, exec Exec, opts Options, sink Sink) (*Result, error) {
	return nil, errors.New("collector: Collect is not implemented yet")
}
