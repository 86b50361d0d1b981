package audit

import (
	"net/url"
	"strings"
)

// KubeletCall is what a request through nodes/proxy does at the kubelet: the API server forwards the rest of the
// path to the node's kubelet with its own credentials, so "get nodes/proxy" may be exec into a pod. The audit
// record names the kubelet operation and, for the operations on a container, the pod and container.
type KubeletCall struct {
	// Operation is the kubelet API reached: exec, run, attach, portForward, containerLogs, checkpoint, cri, logs,
	// stats, pods, runningpods, spec, configz, flagz, statusz, healthz, metrics (metrics/cadvisor, ...),
	// debug/pprof, debug/flags, ... as the path says; "" for the kubelet's root.
	Operation string `json:"operation"`
	Path      string `json:"path"` // the path at the kubelet, without the query
	// Namespace, Pod and UID name the pod of exec, run, attach, portForward, containerLogs and checkpoint.
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	UID       string `json:"uid,omitempty"`
}

// Kubelet operations on a pod, with the number of path segments after the operation: namespace, pod, [uid],
// container (portForward has no container).
var kubeletPodOps = map[string]bool{
	"exec": true, "run": true, "attach": true, "containerLogs": true, "checkpoint": true, "portForward": false,
}

// KubeletDetails describes a nodes/proxy request whose path at the kubelet is path (what follows
// /api/v1/nodes/NAME/proxy) and whose query is query: the call, and for exec, attach and run also the command
// (exec and attach: the "command" parameters in order; run: its "cmd" parameter split on spaces, as the kubelet
// splits it) and the container.
func KubeletDetails(path string, query url.Values) (call *KubeletCall, command []string, container string) {
	if path == "" {
		path = "/"
	}
	call = &KubeletCall{Path: path}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	call.Operation = segs[0]
	if (segs[0] == "debug" || segs[0] == "metrics") && len(segs) > 1 && segs[1] != "" {
		call.Operation += "/" + segs[1]
	}
	withContainer, onPod := kubeletPodOps[segs[0]]
	if !onPod {
		return call, nil, ""
	}
	args := segs[1:]
	switch {
	case withContainer && len(args) == 3:
		call.Namespace, call.Pod, container = args[0], args[1], args[2]
	case withContainer && len(args) == 4:
		call.Namespace, call.Pod, call.UID, container = args[0], args[1], args[2], args[3]
	case !withContainer && (len(args) == 2 || len(args) == 3):
		call.Namespace, call.Pod = args[0], args[1]
		if len(args) == 3 {
			call.UID = args[2]
		}
	}
	switch segs[0] {
	case "exec", "attach":
		command, _ = ExecDetails(query)
	case "run":
		if cmd := query.Get("cmd"); cmd != "" {
			command = strings.Split(cmd, " ")
		}
	}
	return call, command, container
}
