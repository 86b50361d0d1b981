package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
)

// SSMClient is the part of the SSM API Run uses; *ssm.Client implements it.
type SSMClient interface {
	SendCommand(ctx context.Context, in *ssm.SendCommandInput, optFns ...func(*ssm.Options)) (*ssm.SendCommandOutput, error)
	GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, optFns ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error)
}

// RunConfig says where to run a script and how long to wait.
type RunConfig struct {
	Client      SSMClient // required
	InstanceIDs []string  // required
	Script      string    // required
	// Comment is shown in the SSM console's command history (at most 100 characters).
	Comment string
	// Timeout bounds the whole run: delivery, execution, and the wait for results. Default 10 minutes.
	Timeout time.Duration
	// PollInitial and PollMax bound the wait between two rounds of GetCommandInvocation, which doubles from the
	// first to the second. Defaults 1 s and 10 s.
	PollInitial, PollMax time.Duration
	// Progress receives a line when an instance's status changes. Nil: none.
	Progress io.Writer
}

// Result is how the script went on one instance.
type Result struct {
	InstanceID string
	// Status is SSM's: Success, Failed, TimedOut, Cancelled, or, when the wait ended first, the last one seen
	// (Pending, InProgress, Delayed) or "Unknown".
	Status       string
	Details      string // SSM's StatusDetails, e.g. ExecutionTimedOut, Undeliverable
	ResponseCode int    // the script's exit code; -1 when it did not finish
	Duration     time.Duration
	Stdout       string // the first 24,000 characters, as SSM keeps them
	Stderr       string
	// Err is why the result is incomplete: GetCommandInvocation failing, or the wait ending first.
	Err error
}

// OK reports whether the script succeeded on the instance.
func (r Result) OK() bool { return r.Status == string(ssmtypes.CommandInvocationStatusSuccess) }

// Run sends the script to the instances with AWS-RunShellScript, then polls GetCommandInvocation for each, with
// backoff, until all have finished or the timeout has passed. It returns the command id and one Result per
// instance, in the order given; err is set only when the command could not be sent.
func Run(ctx context.Context, cfg RunConfig) (string, []Result, error) {
	if cfg.Client == nil || len(cfg.InstanceIDs) == 0 || cfg.Script == "" {
		return "", nil, errors.New("bootstrap: Client, InstanceIDs and Script are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultInstallConfig().Timeout
	}
	if cfg.PollInitial <= 0 {
		cfg.PollInitial = time.Second
	}
	if cfg.PollMax < cfg.PollInitial {
		cfg.PollMax = max(10*time.Second, cfg.PollInitial)
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	secs := int(cfg.Timeout.Round(time.Second) / time.Second)
	comment := cfg.Comment
	if len(comment) > 100 {
		comment = comment[:100]
	}
	out, err := cfg.Client.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName: aws.String("AWS-RunShellScript"),
		InstanceIds:  cfg.InstanceIDs,
		Parameters: map[string][]string{
			"commands":         strings.Split(strings.TrimSuffix(cfg.Script, "\n"), "\n"),
			"executionTimeout": {strconv.Itoa(min(max(secs, 30), 172800))}, // SSM's bounds
		},
		// How long SSM tries to deliver the command to an instance that is not connected.
		TimeoutSeconds: aws.Int32(int32(min(max(secs, 30), 2592000))),
		Comment:        aws.String(comment),
	})
	if err != nil {
		return "", nil, fmt.Errorf("SSM SendCommand failed: %w%s", err, sendHint(err))
	}
	if out.Command == nil || out.Command.CommandId == nil {
		return "", nil, errors.New("SSM SendCommand returned no command id")
	}
	id := *out.Command.CommandId
	fmt.Fprintf(cfg.Progress, "sent SSM command %s to %s; waiting for results (up to %s)\n", id, strings.Join(cfg.InstanceIDs, ", "), cfg.Timeout)

	results := make([]Result, len(cfg.InstanceIDs))
	for i, inst := range cfg.InstanceIDs {
		results[i] = Result{InstanceID: inst, Status: "Pending", ResponseCode: -1}
	}
	started := time.Now()
	wait := cfg.PollInitial
	for {
		pending := 0
		for i := range results {
			r := &results[i]
			if finished(r.Status) || r.Err != nil {
				continue
			}
			before := r.Status
			poll(ctx, cfg.Client, id, r, started)
			if r.Status != before {
				fmt.Fprintf(cfg.Progress, "%s: %s\n", r.InstanceID, r.Status)
			}
			if !finished(r.Status) && r.Err == nil {
				pending++
			}
		}
		if pending == 0 {
			return id, results, nil
		}
		select {
		case <-ctx.Done():
			for i := range results {
				if r := &results[i]; !finished(r.Status) && r.Err == nil {
					r.Err = fmt.Errorf("still %s when the wait ended (%v): the command may finish later; see "+
						"aws ssm get-command-invocation --command-id %s --instance-id %s", r.Status, context.Cause(ctx), id, r.InstanceID)
					if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
						r.Err = fmt.Errorf("still %s after --timeout %s: the command may finish later; see "+
							"aws ssm get-command-invocation --command-id %s --instance-id %s", r.Status, cfg.Timeout, id, r.InstanceID)
					}
					r.Duration = time.Since(started)
				}
			}
			return id, results, nil
		case <-time.After(wait):
		}
		wait = min(2*wait, cfg.PollMax)
	}
}

// finished reports whether an invocation status is final.
func finished(status string) bool {
	switch ssmtypes.CommandInvocationStatus(status) {
	case ssmtypes.CommandInvocationStatusSuccess, ssmtypes.CommandInvocationStatusFailed,
		ssmtypes.CommandInvocationStatusTimedOut, ssmtypes.CommandInvocationStatusCancelled:
		return true
	}
	return false
}

// poll updates r from GetCommandInvocation. Right after SendCommand SSM answers InvocationDoesNotExist for a while:
// that is "Pending", not an error.
func poll(ctx context.Context, c SSMClient, id string, r *Result, started time.Time) {
	out, err := c.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: aws.String(id), InstanceId: aws.String(r.InstanceID)})
	if err != nil {
		var ae smithy.APIError
		switch {
		case errors.As(err, &ae) && ae.ErrorCode() == "InvocationDoesNotExist":
		case ctx.Err() != nil: // the wait ended: Run reports it
		default:
			r.Status = "Unknown"
			r.Err = fmt.Errorf("SSM GetCommandInvocation failed: %w", err)
		}
		return
	}
	r.Status = string(out.Status)
	r.Details = aws.ToString(out.StatusDetails)
	r.ResponseCode = int(out.ResponseCode)
	r.Stdout = aws.ToString(out.StandardOutputContent)
	r.Stderr = aws.ToString(out.StandardErrorContent)
	if d, ok := parseElapsed(aws.ToString(out.ExecutionElapsedTime)); ok {
		r.Duration = d
	} else {
		r.Duration = time.Since(started)
	}
}

var elapsedRE = regexp.MustCompile(`^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$`)

// parseElapsed reads SSM's ExecutionElapsedTime, an ISO 8601 duration such as PT1.234S or PT2M3.5S.
func parseElapsed(s string) (time.Duration, bool) {
	m := elapsedRE.FindStringSubmatch(s)
	if m == nil || s == "PT" {
		return 0, false
	}
	var d time.Duration
	if m[1] != "" {
		h, _ := strconv.Atoi(m[1])
		d += time.Duration(h) * time.Hour
	}
	if m[2] != "" {
		mi, _ := strconv.Atoi(m[2])
		d += time.Duration(mi) * time.Minute
	}
	if m[3] != "" {
		sec, _ := strconv.ParseFloat(m[3], 64)
		d += time.Duration(sec * float64(time.Second))
	}
	return d, true
}

// sendHint says what to do about the usual SendCommand failures.
func sendHint(err error) string {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return ""
	}
	switch ae.ErrorCode() {
	case "InvalidInstanceId":
		return " (is each instance running, with the SSM agent online and an instance role allowing SSM? " +
			"check `aws ssm describe-instance-information` in the same region)"
	case "AccessDeniedException", "AccessDenied":
		return " (the AWS identity needs ssm:SendCommand on the document AWS-RunShellScript and the instances, and ssm:GetCommandInvocation)"
	case "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredTokenException":
		return " (check the AWS credentials: environment, ~/.aws, AWS_PROFILE)"
	}
	return ""
}

// Failed returns the instances whose script did not succeed.
func Failed(results []Result) []string {
	var ids []string
	for _, r := range results {
		if !r.OK() {
			ids = append(ids, r.InstanceID)
		}
	}
	return ids
}

// stderrLines is how many of the last lines of stderr the summary shows for an instance that failed.
const stderrLines = 6

// WriteSummary writes a table of the results, one row per instance, with the last lines of stderr under each that
// failed, and a closing line.
func WriteSummary(w io.Writer, commandID string, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tSTATUS\tDURATION\tRESULT")
	for _, r := range results {
		status := r.Status
		if r.Details != "" && r.Details != r.Status {
			status += " (" + r.Details + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.InstanceID, status, r.Duration.Round(100*time.Millisecond), outcome(r))
	}
	tw.Flush()
	for _, r := range results {
		if r.OK() {
			continue
		}
		lines := lastLines(r.Stderr, stderrLines)
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s stderr (last lines):\n", r.InstanceID)
		for _, l := range lines {
			fmt.Fprintf(w, "  | %s\n", l)
		}
	}
	failed := Failed(results)
	fmt.Fprintln(w)
	if len(failed) == 0 {
		fmt.Fprintf(w, "%d of %d instances succeeded (SSM command %s)\n", len(results), len(results), commandID)
		return
	}
	fmt.Fprintf(w, "%d of %d instances failed: %s (SSM command %s; full output: aws ssm get-command-invocation --command-id %s --instance-id ID)\n",
		len(failed), len(results), strings.Join(failed, ", "), commandID, commandID)
}

// outcome is the one-line result of an instance: the script's last message, or why there is none.
func outcome(r Result) string {
	if r.Err != nil {
		return r.Err.Error()
	}
	if r.OK() {
		if l := lastLines(r.Stdout, 1); len(l) == 1 {
			return strings.TrimPrefix(l[0], "warren bootstrap: ")
		}
		return "done"
	}
	// The script's own verdict, else the last thing it wrote, else SSM's account.
	var msg string
	for _, l := range lastLines(r.Stderr, 50) {
		if m, ok := strings.CutPrefix(l, "warren bootstrap: FAILED: "); ok {
			msg = m
		}
	}
	if msg == "" {
		if l := lastLines(r.Stderr, 1); len(l) == 1 {
			msg = l[0]
		}
	}
	switch {
	case r.Details == "ExecutionTimedOut":
		msg = "the script ran out of time (" + r.Details + ")"
	case r.Details == "Undeliverable" || r.Details == "DeliveryTimedOut":
		msg = "SSM could not deliver the command: is the agent running and connected?"
	case msg == "":
		msg = "no output"
	}
	if r.ResponseCode > 0 {
		return fmt.Sprintf("exit %d: %s", r.ResponseCode, msg)
	}
	return msg
}

// lastLines returns the last n non-blank lines of s.
func lastLines(s string, n int) []string {
	var out []string
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0 && len(out) < n; i-- {
		if l := strings.TrimRight(lines[i], " \r\t"); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
