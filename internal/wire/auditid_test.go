package wire

import (
	"net/http"
	"strings"
	"testing"
)

func TestCheckAuditID(t *testing.T) {
	cases := []struct {
		name   string
		values []string
		want   string // the id, or the start of the error
		ok     bool
	}{
		{"none", nil, "", true},
		{"uuid", []string{"0f9d1c2e-9a3b-4b7e-8a51-3f0e2d4c6b7a"}, "0f9d1c2e-9a3b-4b7e-8a51-3f0e2d4c6b7a", true},
		{"warren acquisition", []string{"warren-acq-3f9a1c2b7d4e-17"}, "warren-acq-3f9a1c2b7d4e-17", true},
		{"all allowed characters", []string{"aZ09._:-"}, "aZ09._:-", true},
		{"longest", []string{strings.Repeat("a", 128)}, strings.Repeat("a", 128), true},
		{"too long", []string{strings.Repeat("a", 129)}, "Audit-ID of 129 characters: want 1 to 128 characters", false},
		{"empty", []string{""}, "Audit-ID of 0 characters", false},
		{"two", []string{"a", "b"}, "2 Audit-ID headers: send at most one", false},
		{"space", []string{"a b"}, `Audit-ID with the character " " at 1`, false},
		{"quote (JSON in the audit log)", []string{`a"b`}, `Audit-ID with the character "\"" at 1`, false},
		{"slash", []string{"a/b"}, `Audit-ID with the character "/" at 1`, false},
		{"percent", []string{"a%0Ab"}, `Audit-ID with the character "%" at 1`, false},
		{"non-ASCII", []string{"aé"}, `Audit-ID with the character "\xc3" at 1`, false},
		{"tab", []string{"a\tb"}, `Audit-ID with the character "\t" at 1`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range c.values {
				h.Add("audit-id", v) // any spelling of the name is the same header
			}
			id, err := CheckAuditID(h)
			if c.ok {
				if err != nil || id != c.want {
					t.Fatalf("CheckAuditID = %q, %v; want %q", id, err, c.want)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("CheckAuditID = %q, %v; want an error starting %q", id, err, c.want)
			}
		})
	}
}
