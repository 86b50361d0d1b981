package audit

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestKubeletDetails(t *testing.T) {
	for _, tc := range []struct {
		path, query string
		call        KubeletCall
		command     []string
		container   string
	}{
		{"/exec/payments/api-1/main", "command=sh&command=-c&command=id&stdout=1", KubeletCall{Operation: "exec",
			Path: "/exec/payments/api-1/main", Namespace: "payments", Pod: "api-1"}, []string{"sh", "-c", "id"}, "main"},
		{"/exec/payments/api-1/9f2c/main", "command=id", KubeletCall{Operation: "exec", Path: "/exec/payments/api-1/9f2c/main",
			Namespace: "payments", Pod: "api-1", UID: "9f2c"}, []string{"id"}, "main"},
		{"/attach/payments/api-1/main", "stdin=1", KubeletCall{Operation: "attach", Path: "/attach/payments/api-1/main",
			Namespace: "payments", Pod: "api-1"}, nil, "main"},
		{"/run/payments/api-1/main", "cmd=cat+%2Fetc%2Fshadow", KubeletCall{Operation: "run", Path: "/run/payments/api-1/main",
			Namespace: "payments", Pod: "api-1"}, []string{"cat", "/etc/shadow"}, "main"},
		{"/portForward/payments/api-1", "port=8080", KubeletCall{Operation: "portForward", Path: "/portForward/payments/api-1",
			Namespace: "payments", Pod: "api-1"}, nil, ""},
		{"/containerLogs/payments/api-1/main", "follow=1", KubeletCall{Operation: "containerLogs",
			Path: "/containerLogs/payments/api-1/main", Namespace: "payments", Pod: "api-1"}, nil, "main"},
		{"/checkpoint/payments/api-1/main", "", KubeletCall{Operation: "checkpoint", Path: "/checkpoint/payments/api-1/main",
			Namespace: "payments", Pod: "api-1"}, nil, "main"},
		{"/logs/", "query=kubelet", KubeletCall{Operation: "logs", Path: "/logs/"}, nil, ""},
		{"/logs/messages", "", KubeletCall{Operation: "logs", Path: "/logs/messages"}, nil, ""},
		{"/debug/pprof/heap", "", KubeletCall{Operation: "debug/pprof", Path: "/debug/pprof/heap"}, nil, ""},
		{"/debug/flags/v", "", KubeletCall{Operation: "debug/flags", Path: "/debug/flags/v"}, nil, ""},
		{"/metrics/cadvisor", "", KubeletCall{Operation: "metrics/cadvisor", Path: "/metrics/cadvisor"}, nil, ""},
		{"/metrics", "", KubeletCall{Operation: "metrics", Path: "/metrics"}, nil, ""},
		{"/stats/summary", "", KubeletCall{Operation: "stats", Path: "/stats/summary"}, nil, ""},
		{"/pods", "", KubeletCall{Operation: "pods", Path: "/pods"}, nil, ""},
		{"/configz", "", KubeletCall{Operation: "configz", Path: "/configz"}, nil, ""},
		{"/cri/exec/abcdef", "", KubeletCall{Operation: "cri", Path: "/cri/exec/abcdef"}, nil, ""},
		{"", "", KubeletCall{Operation: "", Path: "/"}, nil, ""},
		// A malformed pod path still names the operation, and nothing it cannot tell.
		{"/exec/payments", "command=id", KubeletCall{Operation: "exec", Path: "/exec/payments"}, []string{"id"}, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			call, command, container := KubeletDetails(tc.path, q)
			if *call != tc.call || !reflect.DeepEqual(command, tc.command) || container != tc.container {
				t.Fatalf("KubeletDetails(%q, %q) = %+v %q %q; want %+v %q %q", tc.path, tc.query, *call, command, container,
					tc.call, tc.command, tc.container)
			}
		})
	}
}

// FuzzKubeletDetails: any path and query give a call whose every field is taken from the path, and no panic.
func FuzzKubeletDetails(f *testing.F) {
	for _, s := range [][2]string{{"/exec/ns/pod/ctr", "command=id"}, {"/run/a/b/c/d", "cmd=a b"}, {"/portForward/a/b", ""},
		{"/debug/pprof/", ""}, {"", ""}, {"//", "command"}, {"/exec/a/b/c/d/e", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, path, rawQuery string) {
		q, _ := url.ParseQuery(rawQuery)
		call, command, container := KubeletDetails(path, q)
		if call == nil {
			t.Fatal("no call")
		}
		segs := "/" + strings.Trim(call.Path, "/") + "/"
		for _, field := range []string{call.Namespace, call.Pod, call.UID, container} {
			if field != "" && !strings.Contains(segs, "/"+field+"/") {
				t.Fatalf("%q is not a segment of %q", field, call.Path)
			}
		}
		if !strings.HasPrefix(strings.Trim(call.Path, "/"), call.Operation) {
			t.Fatalf("operation %q is not what %q starts with", call.Operation, call.Path)
		}
		if len(command) > 0 && call.Operation != "exec" && call.Operation != "attach" && call.Operation != "run" {
			t.Fatalf("a command for operation %q", call.Operation)
		}
	})
}
