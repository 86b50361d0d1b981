//go:build tools

// Package tools pins the Kubernetes programs the tests run: a real kube-apiserver and kubectl, built from Go modules
// by scripts/kube-bin.sh. It lives in its own module so the main go.mod carries none of k8s.io/kubernetes.
package tools

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
)
