package collector

import (
	"strings"
	"unicode/utf8"
)

// EscapeName makes a target file name (arbitrary bytes) into valid, printable UTF-8, reversibly: bytes below 0x20,
// 0x7f, '%', and each byte of an invalid UTF-8 sequence become %XX (upper-case hex). Archive paths, JSON fields
// and bodyfile names all carry names this way, so a newline in a name cannot forge a line and a JSON encoder
// cannot replace bytes with U+FFFD.
func EscapeName(s string) string { return escape(s, "") }

// escapeBodyfile also escapes '|', the bodyfile's field separator.
func escapeBodyfile(s string) string { return escape(s, "|") }

func escape(s, extra string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == '%' || c >= utf8.RuneSelf || strings.IndexByte(extra, c) >= 0 {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || n > 1 {
				b.WriteString(s[i : i+n])
				i += n
				continue
			}
		} else if c >= 0x20 && c != 0x7f && c != '%' && strings.IndexByte(extra, c) < 0 {
			b.WriteByte(c)
			i++
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
		i++
	}
	return b.String()
}

// UnescapeName reverses EscapeName (and the bodyfile's escaping); ok is false for a malformed escape.
func UnescapeName(s string) (name string, ok bool) {
	if !strings.Contains(s, "%") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, lo := unhex(s[i+1]), unhex(s[i+2])
		if hi < 0 || lo < 0 {
			return "", false
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), true
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}
