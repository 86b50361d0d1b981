package audit

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxFieldBytes bounds the JSON of each free-text field of a Record: a string, or a list or map of strings as a
// whole. Write clips a longer field at a character boundary and names it in Record.Truncated with its length before
// clipping, so that a record can never exceed MaxLineBytes and is never dropped for its size: a caller chooses its
// path, User-Agent and exec command, and each invalid UTF-8 byte or control character takes 6 bytes of JSON.
const MaxFieldBytes = 64 << 10

// clip clips every field of r to MaxFieldBytes of JSON, recording what it clipped in r.Truncated. It walks the
// Record's fields by reflection, so that fields added later are bounded too (TestClipEveryField fills each one).
func clip(r *Record) { ClipFields(r, MaxFieldBytes) }

// ClipFields clips every free-text field of r to maxBytes of JSON (at most MaxFieldBytes), as Write does, naming
// each in r.Truncated. A caller clips harder what it has reason to keep short, such as what an unauthenticated
// caller sent. Slices, maps and structs of r are replaced, not changed, so the caller's copies stay as they were.
func ClipFields(r *Record, maxBytes int) {
	if r.Truncated != nil {
		r.Truncated = maps.Clone(r.Truncated) // never write into a map the caller still holds
	}
	clipTo(r, min(maxBytes, MaxFieldBytes))
}

// clipTo clips every field of r to budget bytes of JSON.
func clipTo(r *Record, budget int) {
	clipFields(reflect.ValueOf(r).Elem(), "", budget, &r.Truncated)
}

// clipFields clips the fields of the struct v, naming them by their JSON names under prefix.
func clipFields(v reflect.Value, prefix string, budget int, truncated *map[string]int) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" || name == "truncated" || name == "prevHash" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		clipValue(v.Field(i), prefix+name, budget, truncated)
	}
}

func clipValue(v reflect.Value, name string, budget int, truncated *map[string]int) {
	mark := func(before int) {
		if *truncated == nil {
			*truncated = map[string]int{}
		}
		(*truncated)[name] = before
	}
	switch v.Kind() {
	case reflect.String:
		if s, cut := clipString(v.String(), budget); cut {
			mark(len(v.String()))
			v.SetString(s)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() != reflect.String {
			return
		}
		left, total := budget, 0
		var kept []string
		cut := false
		for i := range v.Len() {
			s := v.Index(i).String()
			total += len(s)
			if cut {
				continue
			}
			c, clipped := clipString(s, left-3) // the quotes and the comma
			left -= jsonLen(c) + 3
			if c != "" || !clipped {
				kept = append(kept, c)
			}
			cut = clipped
		}
		if cut && v.Kind() == reflect.Slice {
			mark(total)
			v.Set(reflect.ValueOf(kept).Convert(v.Type()))
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String || v.Len() == 0 {
			return
		}
		left, total := budget, 0
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		slices.Sort(keys) // JSON's order: what is kept is what comes first
		kept := reflect.MakeMap(v.Type())
		cut := false
		for _, k := range keys {
			val := v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key()))
			size := jsonLen(k) + 4 + 24 // quotes, colon, comma; a number or bool takes at most 24 bytes
			if val.Kind() == reflect.String {
				size += jsonLen(val.String()) - 24
			}
			total += len(k)
			if cut || size > left {
				cut = true
				continue
			}
			left -= size
			kept.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), val)
		}
		if cut {
			mark(total)
			v.Set(kept)
		}
	case reflect.Struct:
		clipFields(v, name+".", budget, truncated)
	case reflect.Pointer:
		if !v.IsNil() && v.Elem().Kind() == reflect.Struct {
			// A copy, so that the caller's struct is left as it was.
			c := reflect.New(v.Elem().Type())
			c.Elem().Set(v.Elem())
			clipFields(c.Elem(), name+".", budget, truncated)
			v.Set(c)
		}
	}
}

// clipString returns the longest prefix of s whose JSON takes at most max bytes, cut at a character boundary,
// and whether it is shorter than s.
func clipString(s string, max int) (string, bool) {
	if len(s)*6 <= max {
		return s, false
	}
	n := 0
	for i := 0; i < len(s); {
		size, enc := jsonChar(s[i:])
		if n+enc > max {
			return s[:i], true
		}
		n += enc
		i += size
	}
	return s, false
}

// jsonLen is the length of s in JSON without its quotes, as Write encodes it.
func jsonLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		size, enc := jsonChar(s[i:])
		n += enc
		i += size
	}
	return n
}

// jsonChar returns the bytes of the first character of s and the bytes its JSON takes, as encoding/json writes it
// (with HTML escaping off): " and \ are escaped, control characters take \u00XX, an invalid byte becomes \ufffd.
// It errs on the long side, which only clips earlier.
func jsonChar(s string) (size, enc int) {
	c := s[0]
	if c < utf8.RuneSelf {
		switch {
		case c == '"' || c == '\\':
			return 1, 2
		case c < 0x20:
			return 1, 6
		}
		return 1, 1
	}
	r, size := utf8.DecodeRuneInString(s)
	if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
		return size, 6
	}
	return size, size
}
