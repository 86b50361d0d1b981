// Command fakekubelet is a kubelet stand-in for tests against a real kube-apiserver: it registers a Node, runs the
// pods bound to it in containers of its own (Linux namespaces, root filesystems from scripts/rootfs.sh) and serves
// exec, attach, port-forward and logs. It must run as root. See package github.com/warren-dev/warren/internal/testenv/k8s/fakekubelet.
//
// It prints the address it serves on (host:port, one line) to stdout and logs to stderr. With --ready-file it
// writes the same line to that file once the Node is registered and the API is served. SIGTERM or SIGINT stop it:
// it kills its processes and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/warren-dev/warren/internal/testenv/k8s/fakekubelet"
)

// options are the command-line flags.
type options struct {
	kubeconfig string
	nodeName   string
	listen     string
	certDir    string
	readyFile  string
	rootDir    string
	imageDirs  imageDirs
	logLevel   string
}

// imageDirs is the repeatable --image-dir flag.
type imageDirs []string

func (d *imageDirs) String() string     { return strings.Join(*d, ",") }
func (d *imageDirs) Set(v string) error { *d = append(*d, v); return nil }

func (o *options) validate() error {
	if o.kubeconfig == "" {
		return errors.New("--kubeconfig is required")
	}
	if o.nodeName == "" {
		return errors.New("--node-name must not be empty")
	}
	host, _, err := net.SplitHostPort(o.listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", o.listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return fmt.Errorf("--listen %q: the host must be an IP address such as 127.0.0.1 (it becomes the Node's "+
			"InternalIP)", o.listen)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", o.logLevel, err)
	}
	return nil
}

func main() {
	fakekubelet.RunContainerInit() // this binary is also each container's init
	o := options{}
	fs := flag.NewFlagSet("fakekubelet", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of an admin of the API server (required)")
	fs.StringVar(&o.nodeName, "node-name", fakekubelet.DefaultNodeName, "name of the Node to register")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "IP:port to serve the kubelet API on with HTTPS; port 0 picks one")
	fs.StringVar(&o.certDir, "cert-dir", "", "if set, write the self-signed serving certificate there as "+
		"kubelet.crt and kubelet.key")
	fs.StringVar(&o.readyFile, "ready-file", "", "if set, write the serving address there once ready")
	fs.StringVar(&o.rootDir, "root-dir", "", "directory for the pods' volumes, container root filesystems and logs "+
		"(default: a temporary directory, removed at exit)")
	fs.Var(&o.imageDirs, "image-dir", "directory of images (NAME/rootfs and NAME/config.json), searched in the order "+
		"given; repeatable (default: the cache scripts/rootfs.sh builds, $WARREN_CACHE/rootfs)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if len(o.imageDirs) == 0 {
		dir, err := fakekubelet.CacheImageDir()
		if err != nil {
			fmt.Fprintf(os.Stderr, "fakekubelet: %v\n", err)
			os.Exit(2)
		}
		o.imageDirs = imageDirs{dir}
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "fakekubelet: %v\n", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "fakekubelet: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	var level slog.Level
	_ = level.UnmarshalText([]byte(o.logLevel)) // validated
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	restConfig, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("failed to load --kubeconfig: %w", err)
	}
	restConfig.UserAgent = "fakekubelet"
	restConfig.QPS, restConfig.Burst = 100, 200
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("failed to create a client: %w", err)
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", o.listen, err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	ips := []net.IP{addr.IP}
	if !addr.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		ips = append(ips, net.IPv4(127, 0, 0, 1))
	}
	cert, certPEM, keyPEM, err := fakekubelet.SelfSignedCertificate(o.nodeName, ips...)
	if err != nil {
		ln.Close()
		return err
	}
	if o.certDir != "" {
		if err := writeCert(o.certDir, certPEM, keyPEM); err != nil {
			ln.Close()
			return err
		}
	}
	k, err := fakekubelet.New(fakekubelet.Config{
		Client:      client,
		NodeName:    o.nodeName,
		Listener:    ln,
		Certificate: cert,
		RootDir:     o.rootDir,
		ImageDirs:   o.imageDirs,
		Logger:      logger,
	})
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Println(addr.String())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	readyErr := make(chan error, 1)
	go func() {
		select {
		case <-k.Ready():
		case <-ctx.Done():
			readyErr <- nil
			return
		}
		if o.readyFile == "" {
			readyErr <- nil
			return
		}
		readyErr <- writeFileAtomic(o.readyFile, []byte(addr.String()+"\n"))
	}()
	runErr := make(chan error, 1)
	go func() { runErr <- k.Run(ctx) }()
	select {
	case err := <-readyErr:
		if err != nil {
			stop()
			<-runErr
			return err
		}
		return <-runErr
	case err := <-runErr:
		return err
	}
}

func writeCert(dir string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create --cert-dir: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "kubelet.crt"), certPEM); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "kubelet.key"), keyPEM)
}

// writeFileAtomic writes data to a temporary file next to path and renames it, so a reader polling for path never
// sees it half written.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}
