package awsfake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// outputLimit is how much of stdout and stderr GetCommandInvocation returns: the first 24,000 characters, as SSM.
const outputLimit = 24000

// defaultExecutionTimeout is AWS-RunShellScript's executionTimeout when the command does not set it.
const defaultExecutionTimeout = 3600 * time.Second

// command is one SendCommand: an invocation per instance.
type command struct {
	id          string
	document    string
	comment     string
	params      map[string][]string
	requested   time.Time
	invocations map[string]*invocation // by instance id
	instanceIDs []string
}

// invocation is a command running, or run, on one instance. Its fields are guarded by mu.
type invocation struct {
	mu       sync.Mutex
	visible  time.Time // GetCommandInvocation answers InvocationDoesNotExist before
	status   string    // Pending, InProgress, Success, Failed, TimedOut, Cancelled
	details  string
	code     int
	start    time.Time
	end      time.Time
	stdout   string
	stderr   string
	proc     *os.Process // while running
	killed   bool
	workDir  string
	timedOut bool
}

func (inv *invocation) kill() {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.killed = true
	if inv.proc != nil {
		syscall.Kill(-inv.proc.Pid, syscall.SIGKILL) // the script's process group: it and its children
	}
}

func (s *Server) serveSSM(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Method != http.MethodPost {
		writeJSONError(w, http.StatusBadRequest, "InvalidAction", "SSM takes POST")
		return
	}
	if _, sig, err := s.authenticate(r, body, "ssm"); err != nil {
		code, typ, msg := authError(err)
		if typ == "InvalidClientTokenId" {
			typ = "UnrecognizedClientException" // the JSON protocols' name for it
		}
		writeJSONError(w, code, typ, msg)
		return
	} else if sig.region != s.cfg.Region {
		writeJSONError(w, http.StatusForbidden, "InvalidSignatureException", fmt.Sprintf("credential should be scoped to a valid region, not %q", sig.region))
		return
	}
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "AmazonSSM.")
	switch op {
	case "SendCommand":
		s.sendCommand(w, body)
	case "GetCommandInvocation":
		s.getCommandInvocation(w, body)
	case "ListCommandInvocations":
		s.listCommandInvocations(w, body)
	default:
		writeJSONError(w, http.StatusBadRequest, "InvalidAction", "awsfake does not implement AmazonSSM."+op)
	}
}

const jsonContentType = "application/x-amz-json-1.1"

func (s *Server) sendCommand(w http.ResponseWriter, body []byte) {
	var in struct {
		DocumentName   string
		InstanceIds    []string
		Parameters     map[string][]string
		TimeoutSeconds *int
		Comment        string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSONError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	if in.DocumentName != "AWS-RunShellScript" {
		writeJSONError(w, http.StatusBadRequest, "InvalidDocument", fmt.Sprintf("awsfake runs AWS-RunShellScript only, not %q", in.DocumentName))
		return
	}
	if len(in.InstanceIds) == 0 {
		writeJSONError(w, http.StatusBadRequest, "ValidationException", "InstanceIds or Targets is required")
		return
	}
	for _, id := range in.InstanceIds {
		if s.instance(id) == nil {
			writeJSONError(w, http.StatusBadRequest, "InvalidInstanceId", fmt.Sprintf("Instance %s is not managed by SSM, or is not in a valid state", id))
			return
		}
	}
	if len(in.Parameters["commands"]) == 0 {
		writeJSONError(w, http.StatusBadRequest, "InvalidParameters", "AWS-RunShellScript needs the parameter commands")
		return
	}
	timeout := defaultExecutionTimeout
	if v := in.Parameters["executionTimeout"]; len(v) > 0 {
		secs, err := strconv.Atoi(v[0])
		if err != nil || secs < 1 || secs > 172800 {
			writeJSONError(w, http.StatusBadRequest, "InvalidParameters", "executionTimeout must be a number of seconds between 1 and 172800")
			return
		}
		timeout = time.Duration(secs) * time.Second
	}
	now := s.now()
	c := &command{id: newUUID(), document: in.DocumentName, comment: in.Comment, params: in.Parameters,
		requested: now, invocations: map[string]*invocation{}, instanceIDs: in.InstanceIds}
	script := strings.Join(in.Parameters["commands"], "\n") + "\n"
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeJSONError(w, http.StatusServiceUnavailable, "InternalServerError", "closing")
		return
	}
	s.commands[c.id] = c
	s.order = append(s.order, c.id)
	for _, id := range in.InstanceIds {
		inv := &invocation{status: "Pending", details: "Pending", visible: now.Add(s.cfg.InvocationDelay), code: -1}
		c.invocations[id] = inv
		s.running.Add(1)
		go func() {
			defer s.running.Done()
			s.execute(c, s.instance(id), inv, script, timeout)
		}()
	}
	s.mu.Unlock()
	s.log.Info("SendCommand", "command_id", c.id, "instances", in.InstanceIds)
	writeJSON(w, jsonContentType, map[string]any{"Command": s.commandJSON(c)})
}

func (s *Server) commandJSON(c *command) map[string]any {
	status := "Success"
	for _, inv := range c.invocations {
		inv.mu.Lock()
		st := inv.status
		inv.mu.Unlock()
		switch st {
		case "Pending", "InProgress":
			status = "InProgress"
		case "Failed", "TimedOut", "Cancelled":
			if status == "Success" {
				status = st
			}
		}
	}
	return map[string]any{
		"CommandId":         c.id,
		"DocumentName":      c.document,
		"Comment":           c.comment,
		"InstanceIds":       c.instanceIDs,
		"Parameters":        c.params, // SSM keeps and returns the parameters: whatever a script embeds is stored
		"RequestedDateTime": epoch(c.requested),
		"Status":            status,
		"TargetCount":       len(c.instanceIDs),
	}
}

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// execute runs the script on an instance as the SSM agent does: written to _script.sh in a fresh work directory,
// run by /bin/sh with that directory as the working directory, the agent's environment plus the instance's.
func (s *Server) execute(c *command, in *Instance, inv *invocation, script string, timeout time.Duration) {
	work := filepath.Join(s.cfg.Dir, in.ID, "orchestration", c.id, "awsrunShellScript", "0.awsrunShellScript")
	fail := func(msg string) {
		inv.mu.Lock()
		inv.status, inv.details, inv.code, inv.stderr, inv.end = "Failed", "Failed", 1, msg, s.now()
		inv.mu.Unlock()
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		fail(err.Error())
		return
	}
	path := filepath.Join(work, "_script.sh")
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		fail(err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.Command("/bin/sh", path)
	cmd.Dir = work
	cmd.Env = append([]string{
		"PATH=" + strings.Join(append(slices.Clone(in.Path), s.binDir(in.ID)), ":") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + in.Root,
		"LANG=C.UTF-8",
		"AWS_SSM_INSTANCE_ID=" + in.ID,
		"AWS_SSM_REGION_NAME=" + s.cfg.Region,
		"AWSFAKE_ROOT=" + in.Root,
		"AWSFAKE_STATE=" + s.stateDir(in.ID),
	}, in.Env...)
	var stdout, stderr capped
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A background child that kept the pipes open would hold Wait: services are started with their output sent
	// elsewhere, and this bounds the rest.
	cmd.WaitDelay = 5 * time.Second
	inv.mu.Lock()
	if inv.killed {
		inv.mu.Unlock()
		fail("cancelled")
		return
	}
	inv.status, inv.details, inv.start, inv.workDir = "InProgress", "InProgress", s.now(), work
	err := cmd.Start()
	if err == nil {
		inv.proc = cmd.Process
	}
	inv.mu.Unlock()
	if err != nil {
		fail(err.Error())
		return
	}
	stop := context.AfterFunc(ctx, func() {
		inv.mu.Lock()
		inv.timedOut = true
		inv.mu.Unlock()
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	err = cmd.Wait()
	stop()
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.proc = nil
	inv.end = s.now()
	inv.stdout, inv.stderr = stdout.String(), stderr.String()
	var exitErr *exec.ExitError
	switch {
	case inv.timedOut:
		inv.status, inv.details, inv.code = "TimedOut", "ExecutionTimedOut", -1
	case inv.killed:
		inv.status, inv.details, inv.code = "Cancelled", "Cancelled", -1
	case err == nil:
		inv.status, inv.details, inv.code = "Success", "Success", 0
	case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0:
		inv.status, inv.details, inv.code = "Failed", "Failed", exitErr.ExitCode()
		inv.stderr += "\nfailed to run commands: exit status " + strconv.Itoa(exitErr.ExitCode())
	default:
		inv.status, inv.details, inv.code = "Failed", "Failed", 1
		inv.stderr += "\n" + err.Error()
	}
	s.log.Info("command done", "command_id", c.id, "instance", in.ID, "status", inv.status, "code", inv.code)
}

// capped keeps the first outputLimit characters written to it and discards the rest (the agent uploads the whole
// output to S3 when asked; the API returns only the beginning).
type capped struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := outputLimit*utf8.UTFMax - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.buf.String()
	if utf8.RuneCountInString(s) <= outputLimit {
		return s
	}
	r := []rune(s)
	return string(r[:outputLimit])
}

func (s *Server) getCommandInvocation(w http.ResponseWriter, body []byte) {
	var in struct {
		CommandId  string
		InstanceId string
		PluginName string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSONError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	s.mu.Lock()
	c := s.commands[in.CommandId]
	s.mu.Unlock()
	if c == nil {
		writeJSONError(w, http.StatusBadRequest, "InvalidCommandId", "")
		return
	}
	inv := c.invocations[in.InstanceId]
	if inv == nil {
		writeJSONError(w, http.StatusBadRequest, "InvalidInstanceId", "")
		return
	}
	if in.PluginName != "" && in.PluginName != "aws:runShellScript" && in.PluginName != "aws:runShellScript-0" {
		writeJSONError(w, http.StatusBadRequest, "InvalidPluginName", "")
		return
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if s.now().Before(inv.visible) {
		writeJSONError(w, http.StatusBadRequest, "InvocationDoesNotExist", "")
		return
	}
	out := map[string]any{
		"CommandId":             c.id,
		"InstanceId":            in.InstanceId,
		"Comment":               c.comment,
		"DocumentName":          c.document,
		"DocumentVersion":       "$DEFAULT",
		"PluginName":            "aws:runShellScript",
		"ResponseCode":          inv.code,
		"Status":                inv.status,
		"StatusDetails":         inv.details,
		"StandardOutputContent": inv.stdout,
		"StandardErrorContent":  inv.stderr,
		"StandardOutputUrl":     "",
		"StandardErrorUrl":      "",
	}
	if !inv.start.IsZero() {
		out["ExecutionStartDateTime"] = inv.start.UTC().Format(ssmTimeFormat)
		end := inv.end
		if end.IsZero() {
			end = s.now()
		} else {
			out["ExecutionEndDateTime"] = inv.end.UTC().Format(ssmTimeFormat)
		}
		out["ExecutionElapsedTime"] = isoDuration(end.Sub(inv.start))
	}
	writeJSON(w, jsonContentType, out)
}

// ssmTimeFormat is how GetCommandInvocation writes its times: 2024-01-16T21:15:34.461Z.
const ssmTimeFormat = "2006-01-02T15:04:05.000Z"

// isoDuration writes d as SSM does, e.g. PT1.234S.
func isoDuration(d time.Duration) string {
	return fmt.Sprintf("PT%.3fS", d.Seconds())
}

func (s *Server) listCommandInvocations(w http.ResponseWriter, body []byte) {
	var in struct {
		CommandId  string
		InstanceId string
		Details    bool
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSONError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	s.mu.Lock()
	ids := append([]string(nil), s.order...)
	cmds := map[string]*command{}
	for _, id := range ids {
		cmds[id] = s.commands[id]
	}
	s.mu.Unlock()
	var list []map[string]any
	for i := len(ids) - 1; i >= 0; i-- { // newest first, as SSM lists them
		c := cmds[ids[i]]
		if in.CommandId != "" && c.id != in.CommandId {
			continue
		}
		instances := append([]string(nil), c.instanceIDs...)
		sort.Strings(instances)
		for _, inst := range instances {
			if in.InstanceId != "" && inst != in.InstanceId {
				continue
			}
			inv := c.invocations[inst]
			inv.mu.Lock()
			item := map[string]any{
				"CommandId": c.id, "InstanceId": inst, "DocumentName": c.document, "Comment": c.comment,
				"RequestedDateTime": epoch(c.requested), "Status": inv.status, "StatusDetails": inv.details,
			}
			if in.Details {
				item["CommandPlugins"] = []map[string]any{{
					"Name": "aws:runShellScript", "Status": inv.status, "StatusDetails": inv.details,
					"ResponseCode": inv.code, "Output": truncate(inv.stdout+inv.stderr, 2500),
				}}
			}
			inv.mu.Unlock()
			list = append(list, item)
		}
	}
	writeJSON(w, jsonContentType, map[string]any{"CommandInvocations": list})
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n])
	}
	return s
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func newID() string { return newUUID() }
