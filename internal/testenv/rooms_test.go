package testenv_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/bootstrap"
	"github.com/warren-dev/warren/client"
	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/connector"
	"github.com/warren-dev/warren/connector/eks"
	"github.com/warren-dev/warren/evidence/s3store"
	"github.com/warren-dev/warren/gateway"
	"github.com/warren-dev/warren/tunnel"
	"github.com/warren-dev/warren/volume"
)

// TestPublicConfigsNameNoInternalType: a program that embeds warren's packages can fill every field of their
// configurations. A field whose type lives under internal/ (gateway.Config.Limits was a *limit.Limiter of
// internal/limit; Audit an internal auditrec.Sink) cannot be set from outside the module.
func TestPublicConfigsNameNoInternalType(t *testing.T) {
	for _, v := range []any{gateway.Config{}, acquire.Config{}, audit.Config{}, auth.VerifierConfig{}, auth.AssertionVerifierConfig{}, bootstrap.ScriptConfig{}, bootstrap.RunConfig{}, client.Config{}, collector.Options{}, connector.Config{}, eks.Config{}, s3store.Config{}, tunnel.Config{}, volume.Config{}} {
		walk(t, reflect.TypeOf(v), reflect.TypeOf(v).String(), map[reflect.Type]bool{})
	}
}

// walk reports each type under internal/ that ty names, through pointers, containers, functions and the exported
// fields of warren's own structs.
func walk(t *testing.T, ty reflect.Type, where string, seen map[reflect.Type]bool) {
	if seen[ty] {
		return
	}
	seen[ty] = true
	if strings.Contains(ty.PkgPath(), "/internal/") || strings.HasSuffix(ty.PkgPath(), "/internal") {
		t.Errorf("%s is a %s, from %s: no one outside the module can set it", where, ty, ty.PkgPath())
	}
	switch ty.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Chan:
		walk(t, ty.Elem(), where, seen)
	case reflect.Map:
		walk(t, ty.Key(), where, seen)
		walk(t, ty.Elem(), where, seen)
	case reflect.Func:
		for i := 0; i < ty.NumIn(); i++ {
			walk(t, ty.In(i), where, seen)
		}
		for i := 0; i < ty.NumOut(); i++ {
			walk(t, ty.Out(i), where, seen)
		}
	case reflect.Struct:
		if !strings.HasPrefix(ty.PkgPath(), "github.com/warren-dev/warren") {
			return
		}
		for i := 0; i < ty.NumField(); i++ {
			if f := ty.Field(i); f.IsExported() {
				walk(t, f.Type, where+"."+f.Name, seen)
			}
		}
	}
}
