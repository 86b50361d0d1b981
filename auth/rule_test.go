package auth

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	core := []string{""}
	tests := []struct {
		in      string
		want    Rule
		wantErr string
	}{
		{in: "get,list:pods", want: Rule{Verbs: []string{"get", "list"}, APIGroups: core, Resources: []string{"pods"}}},
		{in: "create:pods/exec:payments", want: Rule{Verbs: []string{"create"}, APIGroups: core, Resources: []string{"pods/exec"}, Namespaces: []string{"payments"}}},
		{in: "create:pods/exec:payments:api-7f9c", want: Rule{Verbs: []string{"create"}, APIGroups: core, Resources: []string{"pods/exec"},
			Namespaces: []string{"payments"}, Names: []string{"api-7f9c"}}},
		{in: "get:deployments.apps", want: Rule{Verbs: []string{"get"}, APIGroups: []string{"apps"}, Resources: []string{"deployments"}}},
		{in: "get,update:deployments.apps/scale,deployments.apps:a,b", want: Rule{Verbs: []string{"get", "update"}, APIGroups: []string{"apps"},
			Resources: []string{"deployments/scale", "deployments"}, Namespaces: []string{"a", "b"}}},
		{in: "list:ingresses.networking.k8s.io:*", want: Rule{Verbs: []string{"list"}, APIGroups: []string{"networking.k8s.io"},
			Resources: []string{"ingresses"}, Namespaces: []string{"*"}}},
		{in: "*:*", want: Rule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}}},
		{in: "get:*.apps", want: Rule{Verbs: []string{"get"}, APIGroups: []string{"apps"}, Resources: []string{"*"}}},
		{in: "get:pods.*", want: Rule{Verbs: []string{"get"}, APIGroups: []string{"*"}, Resources: []string{"pods"}}},
		{in: "get:*/scale", want: Rule{Verbs: []string{"get"}, APIGroups: core, Resources: []string{"*/scale"}}},
		{in: "get:namespaces::payments", want: Rule{Verbs: []string{"get"}, APIGroups: core, Resources: []string{"namespaces"}, Names: []string{"payments"}}},
		{in: "get:clusterroles.rbac.authorization.k8s.io::system:node", want: Rule{Verbs: []string{"get"},
			APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"clusterroles"}, Names: []string{"system:node"}}},
		{in: "get:pods:ns:*", want: Rule{Verbs: []string{"get"}, APIGroups: core, Resources: []string{"pods"}, Namespaces: []string{"ns"}}},
		{in: "impersonate:serviceaccounts:kube-system:default", want: Rule{Verbs: []string{"impersonate"}, APIGroups: core,
			Resources: []string{"serviceaccounts"}, Namespaces: []string{"kube-system"}, Names: []string{"default"}}},
		{in: "deletecollection,watch,patch:configmaps", want: Rule{Verbs: []string{"deletecollection", "watch", "patch"}, APIGroups: core, Resources: []string{"configmaps"}}},

		{in: "", wantErr: `rule "": empty rule`},
		{in: "get", wantErr: `rule "get": missing resources`},
		{in: ":pods", wantErr: `rule ":pods": no verbs given`},
		{in: "get:", wantErr: "no resources given"},
		{in: "get,,list:pods", wantErr: "empty item in verbs"},
		{in: "get, list:pods", wantErr: "remove the spaces"},
		{in: "GET:pods", wantErr: `unknown verb "GET"`},
		{in: "lsit:pods", wantErr: `unknown verb "lsit"`},
		{in: "get:Pods", wantErr: `invalid resource "Pods"`},
		{in: "get:pods/", wantErr: "invalid subresource"},
		{in: "get:/exec", wantErr: "invalid resource"},
		{in: "get:pods.", wantErr: "invalid API group"},
		{in: "get:pods.Apps", wantErr: "invalid API group"},
		{in: "get:pods,deployments.apps", wantErr: "different API groups"},
		{in: "get:pods:Payments", wantErr: `invalid namespace "Payments"`},
		{in: "get:pods:a_b", wantErr: "invalid namespace"},
		{in: "get:pods:ns:a/b", wantErr: `invalid name "a/b"`},
		{in: "get:pods:ns:..", wantErr: "invalid name"},
		{in: "get:pods:ns:a,", wantErr: "empty item in names"},
		{in: "get:pods/exec/x", wantErr: "invalid subresource"},
		{in: "get:pods:" + strings.Repeat("a,", 300) + "a", wantErr: "too many namespaces"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRule(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRule(%q) = %+v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "rule ") {
					t.Errorf("error %q does not name the rule", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRule(%q): %v", tc.in, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseRule(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("parsed rule does not validate: %v", err)
			}
		})
	}
}
