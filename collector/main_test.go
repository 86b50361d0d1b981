package collector_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/warren-dev/warren/collector/collectortest"
)

// binDir holds the collector, built on first use (fuzz workers and the fake container's processes never need it).
var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func collectorDir(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "warren-collector-bin-"); binErr == nil {
			binErr = collectortest.Build(binDir)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	collectortest.Main() // the fake container's side when re-executed
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// memSink keeps every entry, as acquire's evidence.tar would, and checks the sink contract.
type memSink struct {
	names []string
	data  map[string][]byte
	tar   bytes.Buffer
	tw    *tar.Writer
}

func newMemSink() *memSink {
	s := &memSink{data: map[string][]byte{}}
	s.tw = tar.NewWriter(&s.tar)
	return s
}

func (s *memSink) WriteEntry(hdr *tar.Header, body io.Reader) error {
	data, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	if int64(len(data)) != hdr.Size {
		return fmt.Errorf("%s: %d bytes for a header of %d", hdr.Name, len(data), hdr.Size)
	}
	s.names = append(s.names, hdr.Name)
	s.data[hdr.Name] = data
	if err := s.tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = s.tw.Write(data)
	return err
}
