// Package testenv is the home of what runs warren's surroundings for tests, benchmarks and the demo, never in
// production: real or stand-in servers and the processes that run them (kubetest: etcd and kube-apiserver;
// containerdtest: containerd and runc; s3test: SeaweedFS; awsfake: SSM, EKS and STS; testproc: their child processes),
// throwaway certificates (testcert), what in-process tests share (memnet: an in-memory network for synctest bubbles;
// wait: polling a condition; testlog: loggers a test reads), the demo's commands (cmd/devcert, cmd/devcluster), and two
// modules of their own that pin what the main go.mod must not carry: k8s (kube-apiserver, kubectl, and fakekubelet, the
// kubelet stand-in) and s3 (SeaweedFS). Product code never imports it.
package testenv
