package awsfake

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	authv1 "k8s.io/api/authentication/v1"
)

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func awsConfig(s *Server, id Identity) aws.Config {
	return aws.Config{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(id.AccessKeyID, id.SecretAccessKey, id.SessionToken),
	}
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// waitInvocation polls GetCommandInvocation until the invocation has ended.
func waitInvocation(t *testing.T, c *ssm.Client, cmdID, instance string) *ssm.GetCommandInvocationOutput {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := c.GetCommandInvocation(context.Background(), &ssm.GetCommandInvocationInput{CommandId: &cmdID, InstanceId: &instance})
		if err == nil {
			switch out.Status {
			case ssmtypes.CommandInvocationStatusSuccess, ssmtypes.CommandInvocationStatusFailed,
				ssmtypes.CommandInvocationStatusTimedOut, ssmtypes.CommandInvocationStatusCancelled:
				return out
			}
		} else if errorCode(err) != "InvocationDoesNotExist" {
			t.Fatalf("GetCommandInvocation: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("invocation %s on %s still running", cmdID, instance)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func send(t *testing.T, c *ssm.Client, params map[string][]string, instances ...string) string {
	t.Helper()
	out, err := c.SendCommand(context.Background(), &ssm.SendCommandInput{
		DocumentName: aws.String("AWS-RunShellScript"),
		InstanceIds:  instances,
		Parameters:   params,
	})
	if err != nil {
		t.Fatal(err)
	}
	return *out.Command.CommandId
}

func TestRunShellScript(t *testing.T) {
	// The invocation stays invisible until the test moves the Server's clock past InvocationDelay: on a loaded
	// machine a real delay can pass before the first GetCommandInvocation is even sent. The clock runs meanwhile
	// (the execution times are real) and the jump stays within SigV4's allowed skew.
	const delay = time.Minute
	var ahead atomic.Int64
	s := start(t, Config{
		Instances:       []Instance{{ID: "i-1", Env: []string{"GREETING=hello"}}, {ID: "i-2"}},
		InvocationDelay: delay,
		Now:             func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) },
	})
	c := ssm.NewFromConfig(awsConfig(s, TestIdentity))
	id := send(t, c, map[string][]string{"commands": {
		`echo "$GREETING from $AWS_SSM_INSTANCE_ID in $(basename "$PWD")"`,
		`echo oops >&2`,
		`[ "$AWS_SSM_INSTANCE_ID" = i-1 ] || exit 3`,
	}}, "i-1", "i-2")

	// Right after SendCommand the invocation does not exist yet, as with SSM.
	_, err := c.GetCommandInvocation(context.Background(), &ssm.GetCommandInvocationInput{CommandId: &id, InstanceId: aws.String("i-1")})
	if errorCode(err) != "InvocationDoesNotExist" {
		t.Fatalf("early GetCommandInvocation: %v", err)
	}
	ahead.Store(int64(delay))

	ok := waitInvocation(t, c, id, "i-1")
	if ok.Status != ssmtypes.CommandInvocationStatusSuccess || ok.ResponseCode != 0 ||
		*ok.StandardOutputContent != "hello from i-1 in 0.awsrunShellScript\n" || *ok.StandardErrorContent != "oops\n" {
		t.Fatalf("i-1: %s %d %q %q", ok.Status, ok.ResponseCode, *ok.StandardOutputContent, *ok.StandardErrorContent)
	}
	if !strings.HasPrefix(*ok.ExecutionElapsedTime, "PT") || ok.ExecutionStartDateTime == nil || ok.ExecutionEndDateTime == nil {
		t.Fatalf("times: %v %v %v", ok.ExecutionElapsedTime, ok.ExecutionStartDateTime, ok.ExecutionEndDateTime)
	}
	if _, err := time.Parse(ssmTimeFormat, *ok.ExecutionStartDateTime); err != nil {
		t.Fatal(err)
	}
	bad := waitInvocation(t, c, id, "i-2")
	if bad.Status != ssmtypes.CommandInvocationStatusFailed || bad.ResponseCode != 3 || !strings.Contains(*bad.StandardErrorContent, "oops") {
		t.Fatalf("i-2: %s %d %q", bad.Status, bad.ResponseCode, *bad.StandardErrorContent)
	}

	list, err := c.ListCommandInvocations(context.Background(), &ssm.ListCommandInvocationsInput{CommandId: &id, Details: true})
	if err != nil || len(list.CommandInvocations) != 2 {
		t.Fatalf("ListCommandInvocations: %v %+v", err, list)
	}
}

func TestSSMErrors(t *testing.T) {
	s := start(t, Config{Instances: []Instance{{ID: "i-1"}}})
	c := ssm.NewFromConfig(awsConfig(s, TestIdentity))
	_, err := c.SendCommand(context.Background(), &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"),
		InstanceIds: []string{"i-404"}, Parameters: map[string][]string{"commands": {"true"}}})
	if errorCode(err) != "InvalidInstanceId" {
		t.Fatalf("unknown instance: %v", err)
	}
	wrong := TestIdentity
	wrong.SecretAccessKey = "not the secret"
	_, err = ssm.NewFromConfig(awsConfig(s, wrong)).SendCommand(context.Background(), &ssm.SendCommandInput{
		DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{"i-1"}, Parameters: map[string][]string{"commands": {"true"}}})
	if errorCode(err) != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v", err)
	}
	unknown := TestIdentity
	unknown.AccessKeyID = "AKIDUNKNOWN"
	_, err = ssm.NewFromConfig(awsConfig(s, unknown)).GetCommandInvocation(context.Background(), &ssm.GetCommandInvocationInput{
		CommandId: aws.String("x"), InstanceId: aws.String("i-1")})
	if errorCode(err) != "UnrecognizedClientException" {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestTimeoutAndOutputLimit(t *testing.T) {
	s := start(t, Config{Instances: []Instance{{ID: "i-1"}}})
	c := ssm.NewFromConfig(awsConfig(s, TestIdentity))
	id := send(t, c, map[string][]string{"commands": {"sleep 30"}, "executionTimeout": {"1"}}, "i-1")
	if out := waitInvocation(t, c, id, "i-1"); out.Status != ssmtypes.CommandInvocationStatusTimedOut || *out.StatusDetails != "ExecutionTimedOut" {
		t.Fatalf("%s %s", out.Status, *out.StatusDetails)
	}
	id = send(t, c, map[string][]string{"commands": {`head -c 30000 /dev/zero | tr '\0' x`}}, "i-1")
	if out := waitInvocation(t, c, id, "i-1"); len(*out.StandardOutputContent) != outputLimit {
		t.Fatalf("stdout of %d characters", len(*out.StandardOutputContent))
	}
}

// The stand-in systemctl starts a unit's ExecStart with its EnvironmentFile, reports it active, and Close stops it.
func TestSystemctl(t *testing.T) {
	s := start(t, Config{Instances: []Instance{{ID: "i-1"}}})
	root := s.InstanceRoot("i-1")
	svc := filepath.Join(root, "svc.sh")
	os.WriteFile(svc, []byte("#!/bin/sh\necho \"started with FOO=$FOO\"\nexec sleep 300\n"), 0o755)
	c := ssm.NewFromConfig(awsConfig(s, TestIdentity))
	id := send(t, c, map[string][]string{"commands": {
		`mkdir -p "$HOME/etc/systemd/system"`,
		`echo 'FOO="bar baz"' > "$HOME/svc.env"`,
		`printf '[Service]\nEnvironmentFile=%s\nExecStart=%s\nRestart=always\n' "$HOME/svc.env" "$HOME/svc.sh" > "$HOME/etc/systemd/system/demo.service"`,
		`systemctl daemon-reload`,
		`systemctl enable --now demo`,
		`systemctl is-active demo`,
	}}, "i-1")
	out := waitInvocation(t, c, id, "i-1")
	if out.Status != ssmtypes.CommandInvocationStatusSuccess || *out.StandardOutputContent != "active\n" {
		t.Fatalf("%s %q %q", out.Status, *out.StandardOutputContent, *out.StandardErrorContent)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.ServiceLog("i-1", "demo"), "started with FOO=bar baz") {
		if time.Now().After(deadline) {
			t.Fatalf("service log: %q", s.ServiceLog("i-1", "demo"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	pid, _ := readPID(filepath.Join(s.stateDir("i-1"), "demo.service.pid"))
	if !s.ServiceRunning("i-1", "demo") || !alive(pid) {
		t.Fatal("service not running")
	}
	s.Close()
	if alive(pid) {
		t.Fatal("service still running after Close")
	}
}

func TestEKSDescribeCluster(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	s := start(t, Config{Clusters: []Cluster{{Name: "prod", Endpoint: "https://127.0.0.1:6443", CAPEM: ca}}})
	c := eks.NewFromConfig(awsConfig(s, TestIdentity))
	out, err := c.DescribeCluster(context.Background(), &eks.DescribeClusterInput{Name: aws.String("prod")})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := base64.StdEncoding.DecodeString(*out.Cluster.CertificateAuthority.Data)
	if *out.Cluster.Endpoint != "https://127.0.0.1:6443" || !bytes.Equal(data, ca) || out.Cluster.Status != "ACTIVE" {
		t.Fatalf("%+v", out.Cluster)
	}
	_, err = c.DescribeCluster(context.Background(), &eks.DescribeClusterInput{Name: aws.String("nope")})
	if errorCode(err) != "ResourceNotFoundException" {
		t.Fatalf("unknown cluster: %v", err)
	}
}

// presignToken makes an EKS token the aws-iam-authenticator way.
func presignToken(t *testing.T, s *Server, id Identity, cluster string) string {
	t.Helper()
	pc := sts.NewPresignClient(sts.NewFromConfig(awsConfig(s, id)))
	req, err := pc.PresignGetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{}, func(o *sts.PresignOptions) {
		o.ClientOptions = append(o.ClientOptions, func(o *sts.Options) {
			o.APIOptions = append(o.APIOptions,
				smithyhttp.SetHeaderValue(ClusterIDHeader, cluster),
				smithyhttp.SetHeaderValue("X-Amz-Expires", "60"))
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return EKSTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(req.URL))
}

func TestSTS(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	s := start(t, Config{Now: clock})
	out, err := sts.NewFromConfig(awsConfig(s, TestIdentity)).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if err != nil || *out.Arn != TestIdentity.ARN || *out.Account != TestIdentity.Account {
		t.Fatalf("GetCallerIdentity: %v %+v", err, out)
	}

	tok := presignToken(t, s, TestIdentity, "prod")
	id, err := s.VerifyEKSToken(tok, "prod")
	if err != nil || id.ARN != TestIdentity.ARN {
		t.Fatalf("valid token: %v", err)
	}
	// The presigned URL itself, fetched with the cluster header as aws-iam-authenticator does.
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, EKSTokenPrefix))
	req, _ := http.NewRequest("GET", string(raw), nil)
	req.Header.Set(ClusterIDHeader, "prod")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET presigned URL: %s", resp.Status)
	}

	if _, err := s.VerifyEKSToken(tok, "other"); err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") {
		t.Fatalf("token for another cluster: %v", err)
	}
	tampered := strings.Replace(string(raw), "Action=GetCallerIdentity", "Action=GetCallerIdentity&Extra=1", 1)
	if _, err := s.VerifyEKSToken(EKSTokenPrefix+base64.RawURLEncoding.EncodeToString([]byte(tampered)), "prod"); err == nil {
		t.Fatal("tampered token accepted")
	}
	if _, err := s.VerifyEKSToken("k8s-aws-v1.!!!", "prod"); err == nil {
		t.Fatal("garbage accepted")
	}
	now = now.Add(16 * time.Minute)
	if _, err := s.VerifyEKSToken(tok, "prod"); err == nil || !strings.Contains(err.Error(), "ExpiredToken") {
		t.Fatalf("16-minute-old token: %v", err)
	}
	now = now.Add(-2 * time.Minute) // 14 minutes: still valid, whatever X-Amz-Expires says
	if _, err := s.VerifyEKSToken(tok, "prod"); err != nil {
		t.Fatalf("14-minute-old token: %v", err)
	}
}

func TestTokenReviewWebhook(t *testing.T) {
	s := start(t, Config{})
	review := func(cluster, token string) authv1.TokenReview {
		body, _ := json.Marshal(authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: token}})
		resp, err := http.Post(s.URL+webhookPrefix+cluster, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out authv1.TokenReview
		json.NewDecoder(resp.Body).Decode(&out)
		return out
	}
	tok := presignToken(t, s, TestIdentity, "prod")
	if r := review("prod", tok); !r.Status.Authenticated || r.Status.User.Username != TestIdentity.ARN ||
		len(r.Status.User.Groups) != 1 || r.Status.User.Groups[0] != "system:masters" {
		t.Fatalf("%+v", r.Status)
	}
	if r := review("staging", tok); r.Status.Authenticated || r.Status.Error == "" {
		t.Fatalf("token of another cluster: %+v", r.Status)
	}
	if !strings.Contains(string(s.WebhookKubeconfig("prod")), s.URL+webhookPrefix+"prod") {
		t.Fatal("webhook kubeconfig")
	}
}
