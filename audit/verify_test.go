package audit

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// edit returns a copy of the 8-record chain with f applied to its lines (each with its newline).
func edit(t *testing.T, f func(ls [][]byte) [][]byte) []byte {
	ls := lines(chain(t, 8))
	return bytes.Join(f(ls), nil)
}

func TestVerifyBrokenChain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		data     func(t *testing.T) []byte
		line     int
		seq      uint64
		reason   string // a substring of Reason
		parseErr bool
	}{
		{
			name: "tampered middle line",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte {
					ls[3] = bytes.Replace(ls[3], []byte(`"decision":"allow"`), []byte(`"decision":"deny"`), 1)
					return ls
				})
			},
			line: 5, seq: 5, reason: "SHA-256 of line 4: line 4 was altered",
		},
		{
			name: "deleted middle line",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte { return append(ls[:3], ls[4:]...) })
			},
			line: 4, seq: 5, reason: "seq 5 follows seq 3 (want 4): 1 record(s) deleted",
		},
		{
			name: "deleted first line",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte { return ls[1:] })
			},
			line: 1, seq: 2, reason: "first record has seq 2",
		},
		{
			name: "reordered lines",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte { ls[5], ls[6] = ls[6], ls[5]; return ls })
			},
			line: 6, seq: 7, reason: "seq 7 follows seq 5",
		},
		{
			name: "duplicated line",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte { return append(ls[:3], append([][]byte{ls[2]}, ls[3:]...)...) })
			},
			line: 4, seq: 3, reason: "duplicated",
		},
		{
			name: "edited hash",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte {
					i := bytes.Index(ls[6], []byte(`"prevHash":"`)) + len(`"prevHash":"`)
					ls[6][i] ^= 1 // '0'..'9' and 'a'..'f' stay hex digits
					return ls
				})
			},
			line: 7, seq: 7, reason: "prevHash does not match the SHA-256 of line 6",
		},
		{
			name: "first line's zero hash edited",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte {
					ls[0] = bytes.Replace(ls[0], []byte(zeroHash), []byte(strings.Repeat("1", 64)), 1)
					return ls
				})
			},
			line: 1, seq: 1, reason: "not 64 zeros",
		},
		{
			name: "truncated file",
			data: func(t *testing.T) []byte { d := chain(t, 8); return d[:len(d)-30] },
			line: 8, seq: 8, reason: "incomplete", parseErr: true,
		},
		{
			name: "final newline missing",
			data: func(t *testing.T) []byte { d := chain(t, 8); return d[:len(d)-1] },
			line: 8, seq: 8, reason: "incomplete", parseErr: true,
		},
		{
			name: "garbage line inserted",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte { return append(ls[:2], append([][]byte{[]byte("oops\n")}, ls[2:]...)...) })
			},
			line: 3, seq: 3, reason: "not an audit record", parseErr: true,
		},
		{
			name: "empty line",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte { return append(ls[:7], append([][]byte{[]byte("\n")}, ls[7:]...)...) })
			},
			line: 8, seq: 8, reason: "not an audit record", parseErr: true,
		},
		{
			name: "record without prevHash",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte { return append(ls[:1], []byte(`{"seq":2}`+"\n")) })
			},
			line: 2, seq: 2, reason: `no "prevHash"`, parseErr: true,
		},
		{
			name: "line too long",
			data: func(t *testing.T) []byte {
				return edit(t, func(ls [][]byte) [][]byte {
					return append(ls[:1], []byte(strings.Repeat(" ", MaxLineBytes+1)+"\n"))
				})
			},
			line: 2, seq: 2, reason: "longer than", parseErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data(t)
			n, err := Verify(bytes.NewReader(data))
			var be *BrokenLinkError
			if !errors.As(err, &be) {
				t.Fatalf("Verify = %d, %v; want a *BrokenLinkError", n, err)
			}
			if be.Line != tc.line || be.Seq != tc.seq || !strings.Contains(be.Reason, tc.reason) {
				t.Errorf("got line %d seq %d reason %q; want line %d seq %d reason containing %q", be.Line, be.Seq, be.Reason, tc.line, tc.seq, tc.reason)
			}
			if n != tc.line-1 {
				t.Errorf("records = %d, want %d (the intact lines before the break)", n, tc.line-1)
			}
			// The same answer when the reader hands out one byte at a time.
			n2, err2 := Verify(iotest.OneByteReader(bytes.NewReader(data)))
			if n2 != n || err2 == nil || err2.Error() != err.Error() {
				t.Errorf("one byte at a time: %d, %v; want %d, %v", n2, err2, n, err)
			}
		})
	}
}

func TestVerifyIntact(t *testing.T) {
	for _, n := range []int{0, 1, 2, 50} {
		if got, err := Verify(bytes.NewReader(chain(t, n))); got != n || err != nil {
			t.Errorf("Verify(%d records) = %d, %v", n, got, err)
		}
	}
}

func TestVerifyReadError(t *testing.T) {
	data := chain(t, 3)
	r := io.MultiReader(bytes.NewReader(data), iotest.ErrReader(errors.New("disk gone")))
	n, err := Verify(r)
	var be *BrokenLinkError
	if n != 3 || err == nil || errors.As(err, &be) || !strings.Contains(err.Error(), "disk gone") {
		t.Errorf("Verify = %d, %v; want 3 and the read error", n, err)
	}
}

func FuzzVerify(f *testing.F) {
	var valid []byte
	{
		var buf bytes.Buffer
		l := New(&buf)
		for i := range 3 {
			l.Write(testRecord(i))
		}
		valid = buf.Bytes()
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-7])
	f.Add(bytes.Replace(valid, []byte(`"seq":2`), []byte(`"seq":3`), 1))
	f.Add([]byte(""))
	f.Add([]byte("\n\n"))
	f.Add([]byte(`{"seq":1,"prevHash":"` + zeroHash + `"}` + "\n"))
	f.Add([]byte(`{"seq":18446744073709551615,"prevHash":null}` + "\n"))
	f.Add([]byte(`{"seq":-1}` + "\n" + `[1,2]` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Verify(bytes.NewReader(data))
		if err == nil {
			if want := bytes.Count(data, []byte("\n")); n != want || (len(data) > 0 && data[len(data)-1] != '\n') {
				t.Fatalf("intact chain of %d records, but the input has %d lines: %q", n, want, data)
			}
			return
		}
		var be *BrokenLinkError
		if !errors.As(err, &be) {
			t.Fatalf("not a *BrokenLinkError: %v", err)
		}
		if be.Line < 1 || n != be.Line-1 || be.Reason == "" {
			t.Fatalf("inconsistent: records %d, %+v", n, be)
		}
	})
}
