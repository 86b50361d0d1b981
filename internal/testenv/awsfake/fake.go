// Package awsfake is a local stand-in for the AWS endpoints warren talks to — SSM (Run Command), EKS and STS — that
// speaks their real wire protocols, so that the AWS SDK, pointed at it with BaseEndpoint (--endpoint-url), runs
// unchanged:
//
//   - SSM, JSON 1.1 (POST /, X-Amz-Target AmazonSSM.*): SendCommand with AWS-RunShellScript, GetCommandInvocation,
//     ListCommandInvocations. SendCommand really runs the commands, per instance, with /bin/sh in a work directory
//     of its own, as the SSM agent would: status Pending, InProgress, then Success or Failed with the exit code,
//     stdout and stderr cut at 24,000 characters. A stand-in `systemctl` (and `journalctl`) comes first in that
//     shell's PATH: `systemctl enable --now UNIT` starts the unit's ExecStart with its EnvironmentFile in the
//     background, and the Server stops every such service on Close.
//   - EKS, REST-JSON: DescribeCluster (GET /clusters/{name}).
//   - STS, query protocol: GetCallerIdentity, signed in the Authorization header or presigned in the URL, which is
//     how EKS bearer tokens (k8s-aws-v1.) are made.
//
// Every request must carry a valid SigV4 signature by one of the configured identities. The Server also serves a
// Kubernetes token webhook (TokenReview) that accepts k8s-aws-v1 tokens the way aws-iam-authenticator does, so a
// real kube-apiserver started with --authentication-token-webhook-config-file=[Server.WebhookKubeconfig] accepts
// them.
package awsfake

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Identity is an AWS identity the Server knows: requests signed with its keys are accepted as it.
type Identity struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string // when set, requests must carry it (X-Amz-Security-Token)
	ARN             string // e.g. arn:aws:iam::111122223333:user/alice
	Account         string
	UserID          string
}

// TestIdentity is an identity with fixed test keys, for Config.Identities.
var TestIdentity = Identity{
	AccessKeyID:     "AKIDWARRENTEST000001",
	SecretAccessKey: "warren/test/secret/key/0000000000000000",
	ARN:             "arn:aws:iam::111122223333:user/warren-test",
	Account:         "111122223333",
	UserID:          "AIDAWARRENTEST000001",
}

// Cluster is an EKS cluster DescribeCluster reports.
type Cluster struct {
	Name     string
	Endpoint string // https://... of the API server
	CAPEM    []byte // the CA that signed the API server's certificate (certificateAuthority.data, base64 on the wire)
	Version  string // Kubernetes version; default "1.37"
}

// Instance is a managed instance that runs commands sent to it.
type Instance struct {
	ID string
	// Root is where the stand-in systemctl finds units (Root/etc/systemd/system) and what HOME is set to. Default:
	// a directory under Config.Dir.
	Root string
	// Env is added to the environment of the commands (KEY=VALUE), after the agent's own.
	Env []string
	// Path lists directories that come first in the commands' PATH, before the stand-in systemctl's: the tools of
	// this instance where they differ from this machine's (an older openssl, say).
	Path []string
}

// Config configures a Server.
type Config struct {
	Identities []Identity // accepted callers; default: TestIdentity
	Clusters   []Cluster
	Instances  []Instance
	// Region is the region the Server answers for (credential scopes must name it). Default us-east-1.
	Region string
	// Dir holds the instances' work directories and service logs. Default: a new temporary directory, removed by
	// Close.
	Dir string
	// InvocationDelay is how long after SendCommand GetCommandInvocation still answers InvocationDoesNotExist, as
	// the real service does for a moment. Default 0.
	InvocationDelay time.Duration
	// WebhookGroups are the Kubernetes groups of users the token webhook authenticates. Default system:masters.
	WebhookGroups []string
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives a line per request. Default: discard.
	Logger *slog.Logger
}

// Server is a running stand-in. Its URL is the endpoint URL to give the SDK.
type Server struct {
	URL string

	cfg    Config
	log    *slog.Logger
	srv    *httptest.Server
	tmpDir string // removed by Close when the Server made it

	mu       sync.Mutex          // guards the fields below and cfg.Clusters
	commands map[string]*command // by command id
	order    []string            // command ids, oldest first
	closed   bool
	running  sync.WaitGroup // command executions
}

// New starts a Server on a loopback port (plain HTTP).
func New(cfg Config) (*Server, error) {
	if len(cfg.Identities) == 0 {
		cfg.Identities = []Identity{TestIdentity}
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(cfg.WebhookGroups) == 0 {
		cfg.WebhookGroups = []string{"system:masters"}
	}
	s := &Server{cfg: cfg, log: cfg.Logger, commands: map[string]*command{}}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "awsfake-")
		if err != nil {
			return nil, fmt.Errorf("awsfake: %w", err)
		}
		s.cfg.Dir, s.tmpDir = d, d
	}
	for i := range s.cfg.Instances {
		in := &s.cfg.Instances[i]
		if in.Root == "" {
			in.Root = filepath.Join(s.cfg.Dir, in.ID, "root")
		}
		for _, d := range []string{in.Root, s.stateDir(in.ID), s.binDir(in.ID)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, fmt.Errorf("awsfake: %w", err)
			}
		}
		if err := writeStandIns(s.binDir(in.ID)); err != nil {
			return nil, fmt.Errorf("awsfake: %w", err)
		}
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s, nil
}

// Close stops the HTTP server, kills commands still running, stops every service the stand-in systemctl started,
// and removes the work directory it created.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for _, c := range s.commands {
		for _, inv := range c.invocations {
			inv.kill()
		}
	}
	s.mu.Unlock()
	s.srv.Close()
	s.running.Wait()
	for _, in := range s.cfg.Instances {
		stopServices(s.stateDir(in.ID))
	}
	if s.tmpDir != "" {
		os.RemoveAll(s.tmpDir)
	}
}

func (s *Server) now() time.Time { return s.cfg.Now() }

func (s *Server) identity(accessKey string) *Identity {
	for i := range s.cfg.Identities {
		if s.cfg.Identities[i].AccessKeyID == accessKey {
			return &s.cfg.Identities[i]
		}
	}
	return nil
}

func (s *Server) instance(id string) *Instance {
	for i := range s.cfg.Instances {
		if s.cfg.Instances[i].ID == id {
			return &s.cfg.Instances[i]
		}
	}
	return nil
}

// stateDir is where the stand-in systemctl keeps an instance's service pids and logs.
func (s *Server) stateDir(instance string) string {
	return filepath.Join(s.cfg.Dir, instance, "systemd")
}

// binDir holds an instance's stand-in systemctl and journalctl.
func (s *Server) binDir(instance string) string { return filepath.Join(s.cfg.Dir, instance, "bin") }

// InstanceRoot returns the root directory of an instance (see Instance.Root).
func (s *Server) InstanceRoot(instance string) string {
	if in := s.instance(instance); in != nil {
		return in.Root
	}
	return ""
}

// ServiceLog returns what a service started by the stand-in systemctl has written to stdout and stderr.
func (s *Server) ServiceLog(instance, unit string) string {
	b, _ := os.ReadFile(filepath.Join(s.stateDir(instance), unitName(unit)+".log"))
	return string(b)
}

// ServiceRunning reports whether a service started by the stand-in systemctl is running.
func (s *Server) ServiceRunning(instance, unit string) bool {
	pid, ok := readPID(filepath.Join(s.stateDir(instance), unitName(unit)+".pid"))
	return ok && alive(pid)
}

func unitName(u string) string {
	if strings.Contains(u, ".") {
		return u
	}
	return u + ".service"
}

// serve routes a request by what it is: the token webhook by path, SSM by X-Amz-Target, EKS by its REST path, STS
// by its Action parameter.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "target", r.Header.Get("X-Amz-Target"))
	switch {
	case strings.HasPrefix(r.URL.Path, webhookPrefix):
		s.serveTokenReview(w, r, body)
	case strings.HasPrefix(r.Header.Get("X-Amz-Target"), "AmazonSSM."):
		s.serveSSM(w, r, body)
	case strings.HasPrefix(r.URL.Path, "/clusters"):
		s.serveEKS(w, r, body)
	case r.URL.Path == "/" && (r.URL.Query().Get("Action") != "" || strings.Contains(string(body), "Action=")):
		s.serveSTS(w, r, body)
	default:
		http.Error(w, "awsfake: unknown request "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	}
}

// Errors as each protocol encodes them.

// writeJSONError answers in the JSON 1.1 and REST-JSON form: X-Amzn-ErrorType and {"__type", "message"}.
func writeJSONError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", typ)
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
}

func writeJSON(w http.ResponseWriter, contentType string, v any) {
	w.Header().Set("Content-Type", contentType)
	json.NewEncoder(w).Encode(v)
}

// writeQueryError answers in the query (STS) form: an XML ErrorResponse.
func writeQueryError(w http.ResponseWriter, code int, errCode, msg string) {
	type errBody struct {
		XMLName xml.Name `xml:"ErrorResponse"`
		Xmlns   string   `xml:"xmlns,attr"`
		Error   struct {
			Type    string
			Code    string
			Message string
		}
		RequestID string `xml:"RequestId"`
	}
	var b errBody
	b.Xmlns = stsNamespace
	b.Error.Type, b.Error.Code, b.Error.Message = "Sender", errCode, msg
	b.RequestID = newID()
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(code)
	xml.NewEncoder(w).Encode(b)
}

// authError turns a signature failure into the status AWS answers it with.
func authError(err error) (int, string, string) {
	var se *sigError
	if errors.As(err, &se) {
		code := http.StatusForbidden
		if se.code == "IncompleteSignature" || se.code == "AuthorizationQueryParametersError" {
			code = http.StatusBadRequest
		}
		return code, se.code, se.msg
	}
	return http.StatusForbidden, "AccessDenied", err.Error()
}
