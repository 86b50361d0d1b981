package audit

import (
	"bytes"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// writeOne writes r with a fresh Log and returns its line, without the newline.
func writeOne(t *testing.T, r Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := New(&buf).Write(r); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if n, err := Verify(bytes.NewReader(buf.Bytes())); n != 1 || err != nil {
		t.Fatalf("Verify = %d, %v", n, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// TestClipHugeHeader: a 700 KiB User-Agent of invalid UTF-8 (4.2 MB of JSON, over MaxLineBytes: the record used to
// be dropped while the request was served) is clipped, and the record says so.
func TestClipHugeHeader(t *testing.T) {
	r := testRecord(1)
	r.UserAgent = strings.Repeat("\xff", 700<<10)
	r.Path = "/api/v1/namespaces/\xfe\xfe/pods?x=" + strings.Repeat("\x01", 100<<10)
	line := writeOne(t, r)
	var got Record
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatal(err)
	}
	wantUA := strings.Repeat("\ufffd", MaxFieldBytes/6) // each invalid byte takes 6 bytes of JSON: \ufffd
	if got.UserAgent != wantUA {
		t.Errorf("userAgent: %d runes, want %d U+FFFD", utf8.RuneCountInString(got.UserAgent), MaxFieldBytes/6)
	}
	pathPrefix := "/api/v1/namespaces/\ufffd\ufffd/pods?x="
	wantPathBytes := len(pathPrefix) - 2*len("\ufffd") + 2 // what the prefix took of the original path
	wantPath := pathPrefix + strings.Repeat("\x01", (MaxFieldBytes-jsonLen(r.Path[:wantPathBytes]))/6)
	if got.Path != wantPath {
		t.Errorf("path: %d bytes, want %d", len(got.Path), len(wantPath))
	}
	if want := map[string]int{"userAgent": 700 << 10, "path": len(r.Path)}; !maps.Equal(got.Truncated, want) {
		t.Errorf("truncated = %v, want %v", got.Truncated, want)
	}
	if !bytes.Contains(line, []byte(`"truncated":{"path":`+itoa(len(r.Path))+`,"userAgent":716800}`)) {
		t.Errorf("line lacks the truncated marker: …%s", line[len(line)-200:])
	}
	if len(line) > 2*MaxFieldBytes+4<<10 {
		t.Errorf("line is %d bytes", len(line))
	}
	// Nothing else was touched.
	got.UserAgent, got.Path, got.Truncated = r.UserAgent, r.Path, nil
	want := r
	want.Time, want.Seq, want.PrevHash = want.Time.UTC(), 1, zeroHash
	if !reflect.DeepEqual(got, want) {
		t.Errorf("other fields changed:\n got %+v\nwant %+v", got, want)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestClipEveryField fills each text field of a Record (found by reflection, so that fields added later are covered)
// with 1 MiB of invalid UTF-8: the line stays within MaxLineBytes, and each field is named in truncated.
func TestClipEveryField(t *testing.T) {
	big := strings.Repeat("\xff", 1<<20)
	var r Record
	want := map[string]int{}
	var fill func(v reflect.Value, prefix string)
	fill = func(v reflect.Value, prefix string) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "truncated" || name == "prevHash" {
				continue
			}
			fv := v.Field(i)
			switch {
			case fv.Kind() == reflect.String:
				fv.SetString(big)
				want[prefix+name] = len(big)
			case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
				fv.Set(reflect.ValueOf([]string{big, big}))
				want[prefix+name] = 2 * len(big)
			case fv.Kind() == reflect.Map && fv.Type().Key().Kind() == reflect.String:
				m := reflect.MakeMap(fv.Type())
				for j := range 20000 {
					m.SetMapIndex(reflect.ValueOf(strings.Repeat("\xfe", 20)+itoa(j)), reflect.Zero(fv.Type().Elem()))
				}
				fv.Set(m)
				want[prefix+name] = 20000*20 + len(strings.Join(slices.Collect(func(yield func(string) bool) {
					for j := range 20000 {
						yield(itoa(j))
					}
				}), ""))
			case fv.Kind() == reflect.Pointer && fv.Type().Elem().Kind() == reflect.Struct:
				fv.Set(reflect.New(fv.Type().Elem()))
				fill(fv.Elem(), prefix+name+".")
			}
		}
	}
	fill(reflect.ValueOf(&r).Elem(), "")
	line := writeOne(t, r)
	if len(line) > MaxLineBytes {
		t.Fatalf("line is %d bytes, over MaxLineBytes", len(line))
	}
	var got Record
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got.Truncated, want) {
		t.Errorf("truncated = %v\nwant %v", got.Truncated, want)
	}
	t.Logf("%d fields clipped, line of %d bytes", len(want), len(line))
}

// TestClipAtCharacterBoundaries: valid text is cut between characters and its JSON stays within the bound.
func TestClipAtCharacterBoundaries(t *testing.T) {
	for _, s := range []string{
		strings.Repeat("é", MaxFieldBytes),       // 2 bytes each
		strings.Repeat("日本", MaxFieldBytes),      // 3 bytes each
		strings.Repeat(`"\`, MaxFieldBytes),      // escaped: 2 bytes of JSON each
		strings.Repeat("a\u2028", MaxFieldBytes), // U+2028 takes \u2028
		strings.Repeat("x", MaxFieldBytes+1),
	} {
		c, cut := clipString(s, MaxFieldBytes)
		enc, _ := json.Marshal(c)
		if !cut || !utf8.ValidString(c) || !strings.HasPrefix(s, c) || len(enc)-2 > MaxFieldBytes || len(enc)-2 < MaxFieldBytes-6 {
			t.Errorf("clip of %.10q…: cut %v, valid %v, %d bytes of JSON", s, cut, utf8.ValidString(c), len(enc)-2)
		}
	}
	if c, cut := clipString(strings.Repeat("x", MaxFieldBytes), MaxFieldBytes); cut || len(c) != MaxFieldBytes {
		t.Errorf("a field of exactly MaxFieldBytes was clipped")
	}
}

// TestClipLeavesTheCallersRecord: clipping works on Write's copy; the caller's slices and maps are unchanged.
func TestClipLeavesTheCallersRecord(t *testing.T) {
	r := testRecord(1)
	r.Command = []string{"sh", "-c", strings.Repeat("y", 2*MaxFieldBytes)}
	r.Truncated = map[string]int{}
	r.Suppressed = &Suppressed{Count: 1, Statuses: map[string]int64{strings.Repeat("z", 2*MaxFieldBytes): 1}}
	command := slices.Clone(r.Command)
	line := writeOne(t, r)
	if !slices.Equal(r.Command, command) || len(r.Truncated) != 0 || len(r.Suppressed.Statuses) != 1 {
		t.Errorf("the caller's record changed: %d args, truncated %v, %d statuses", len(r.Command), r.Truncated, len(r.Suppressed.Statuses))
	}
	var got Record
	json.Unmarshal(line, &got)
	if len(got.Command) != 3 || got.Command[2] != strings.Repeat("y", MaxFieldBytes-len("sh")-len("-c")-3*3) /* quotes and a comma each */ ||
		!maps.Equal(got.Truncated, map[string]int{"command": 4 + 2*MaxFieldBytes, "suppressed.statuses": 2 * MaxFieldBytes}) {
		t.Errorf("written: %d args (last %d bytes), truncated %v", len(got.Command), len(got.Command[len(got.Command)-1]), got.Truncated)
	}
}
