package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/testenv/kubetest"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// The connector in these tests runs as cluster-admin: warren's checks are the only barrier, so every refusal below
// is also checked against the API server's own audit log — the request must never have reached it.

// rawClient sends requests to the gateway as they are written, without client-go's path handling.
func rawClient(t *testing.T, gs *gatewayServer) *http.Client {
	pemBytes, err := os.ReadFile(gs.caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

type answer struct {
	code    int
	message string
}

func send(t *testing.T, c *http.Client, gs *gatewayServer, method, rawPath, token string, header http.Header) answer {
	t.Helper()
	req, err := http.NewRequest(method, gs.url()+rawPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	// http.NewRequest keeps "..", "." and "//" as written; set the opaque form so that encoded octets stay too.
	p, _, _ := strings.Cut(rawPath, "?")
	req.URL.Opaque = "//" + gs.addr + p
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawPath, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st metav1.Status
	json.Unmarshal(body, &st)
	return answer{resp.StatusCode, st.Message}
}

// signed signs arbitrary claims and header fields with key, to build tokens warren must refuse.
func signed(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func callerClaims(clusters []string, aud []string, iat, exp time.Time, rules ...string) *auth.Claims {
	c := &auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: auth.DefaultIssuer, Subject: "mallory", Audience: aud, ID: "forged-1",
			IssuedAt: jwt.NewNumericDate(iat), NotBefore: jwt.NewNumericDate(iat), ExpiresAt: jwt.NewNumericDate(exp),
		},
		Warren: auth.Scope{Clusters: clusters},
	}
	for _, r := range rules {
		pr, _ := auth.ParseRule(r)
		c.Warren.Rules = append(c.Warren.Rules, pr)
	}
	return c
}

// neverSeen fails the test if the API server's audit log has any request whose URI contains marker.
func neverSeen(t *testing.T, marker string) {
	t.Helper()
	// Every request of the test has had its answer. A sentinel request sent straight to the API server now is
	// audited after any of them that got through: once its event is in the log, theirs would be too.
	sentinel := "sentinel-" + marker
	cs := clientset(t, kube.RestConfig(kubetest.UserAdmin))
	if _, err := cs.CoreV1().Namespaces().Get(context.Background(), sentinel, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the sentinel request: %v, want NotFound", err)
	}
	var events []kubetest.AuditEvent
	wait.Until(t, 30*time.Second, "the sentinel request in the API server's audit log", func() bool {
		var err error
		if events, err = kube.AuditEvents(); err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if strings.Contains(e.RequestURI, sentinel) {
				return true
			}
		}
		return false
	})
	for _, e := range events {
		if strings.Contains(e.RequestURI, marker) && !strings.Contains(e.RequestURI, sentinel) {
			t.Errorf("the API server saw %s %s (user %s, code %d)", e.Verb, e.RequestURI, e.User, e.Code)
		}
	}
}

func TestAdversarialRequestsNeverReachTheAPIServer(t *testing.T) {
	marker := fmt.Sprintf("adv%d", time.Now().UnixNano()%1e9)
	nsA, nsB := marker+"-a", marker+"-b"
	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, "prod", connectorOpts{name: "a"})
	gs.waitConnectors("prod", 1, 10*time.Second)
	c := rawClient(t, gs)
	now := time.Now()

	valid := callerToken(t, []string{"prod"}, "get,list:pods:"+nsA, "create:pods/exec:"+nsA)
	kid := keys.KeyID
	pubDER, _ := x509.MarshalPKIXPublicKey(keys.Key.Public())
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	good := callerClaims([]string{"prod"}, []string{"warren"}, now, now.Add(time.Hour), "*:*:*")

	// alg none: jwt-go refuses to sign it, so it is assembled by hand.
	b64 := base64.RawURLEncoding.EncodeToString
	noneHeader, _ := json.Marshal(map[string]string{"alg": "none", "kid": kid, "typ": "JWT"})
	payload, _ := json.Marshal(good)
	algNone := b64(noneHeader) + "." + b64(payload) + "."
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + b64(payload) + "." + parts[2]

	podsA := "/clusters/prod/api/v1/namespaces/" + nsA + "/pods"
	cases := []struct {
		name    string
		method  string
		path    string
		token   string
		header  http.Header
		code    int
		message string
	}{
		{"alg none", "GET", podsA, algNone, nil, 401, `invalid caller token: token algorithm "none" is not allowed`},
		{"HS256 keyed with the public key", "GET", podsA, signed(t, jwt.SigningMethodHS256, pubDER, kid, good), nil, 401, `invalid caller token: token algorithm "HS256" is not allowed`},
		{"tampered payload", "GET", podsA, tampered, nil, 401, "invalid caller token: token signature is invalid"},
		{"unknown kid", "GET", podsA, signed(t, jwt.SigningMethodEdDSA, keys.Key, "nobody", good), nil, 401, `invalid caller token: token is signed by unknown key id "nobody"`},
		{"injected kid", "GET", podsA, signed(t, jwt.SigningMethodEdDSA, keys.Key, "../../../../etc/passwd", good), nil, 401, "invalid caller token: token is signed by unknown key id"},
		{"signed by an unknown key with a known kid", "GET", podsA, signed(t, jwt.SigningMethodEdDSA, stranger, kid, good), nil, 401, "invalid caller token: token signature is invalid"},
		{"expired", "GET", podsA, signed(t, jwt.SigningMethodEdDSA, keys.Key, kid, callerClaims([]string{"prod"}, []string{"warren"}, now.Add(-2*time.Hour), now.Add(-time.Hour), "*:*:*")), nil, 401, "invalid caller token: token expired at"},
		{"not yet valid", "GET", podsA, signed(t, jwt.SigningMethodEdDSA, keys.Key, kid, callerClaims([]string{"prod"}, []string{"warren"}, now.Add(time.Hour), now.Add(2*time.Hour), "*:*:*")), nil, 401, "invalid caller token: token"},
		{"wrong audience", "GET", podsA, signed(t, jwt.SigningMethodEdDSA, keys.Key, kid, callerClaims([]string{"prod"}, []string{"kubernetes"}, now, now.Add(time.Hour), "*:*:*")), nil, 401, `invalid caller token: token audience [kubernetes] does not include "warren"`},
		{"missing audience", "GET", podsA, signed(t, jwt.SigningMethodEdDSA, keys.Key, kid, callerClaims([]string{"prod"}, nil, now, now.Add(time.Hour), "*:*:*")), nil, 401, "invalid caller token: token"},
		{"over the maximum lifetime", "GET", podsA, signed(t, jwt.SigningMethodEdDSA, keys.Key, kid, callerClaims([]string{"prod"}, []string{"warren"}, now, now.Add(48*time.Hour), "*:*:*")), nil, 401, "invalid caller token: token lifetime 48h0m0s exceeds the maximum 24h0m0s"},
		{"token for another cluster", "GET", podsA, callerToken(t, []string{"staging"}, "*:*:*"), nil, 403, `token of "e2e-caller" does not grant access to cluster "prod"`},
		{"connector token as caller", "GET", podsA, connectorToken(t, "prod"), nil, 401, `invalid caller token: token audience [warren-connector] does not include "warren"`},
		{"dot-dot segments", "GET", "/clusters/prod/api/v1/namespaces/" + nsA + "/pods/../../" + nsB + "/secrets", valid, nil, 400, ""},
		{"dot segment", "GET", "/clusters/prod/api/v1/namespaces/" + nsA + "/./pods", valid, nil, 400, ""},
		{"double slash", "GET", "/clusters/prod/api/v1/namespaces//" + nsA + "/pods", valid, nil, 400, ""},
		{"encoded slash", "GET", "/clusters/prod/api/v1/namespaces/" + nsA + "%2Fpods", valid, nil, 400, ""},
		{"encoded dots", "GET", "/clusters/prod/api/v1/namespaces/" + nsA + "/pods/%2E%2E/%2E%2E/" + nsB + "/pods", valid, nil, 400, ""},
		{"cluster prefix that does not match", "GET", "/clusters/prod%2F..%2Fother/api/v1/namespaces/" + nsA + "/pods", valid, nil, 400, ""},
		{"impersonate a user", "GET", podsA, valid, http.Header{"Impersonate-User": {"system:admin"}}, 403, `token of "e2e-caller" cannot impersonate`},
		{"impersonate a group", "GET", podsA, valid, http.Header{"Impersonate-Group": {"system:masters"}}, 403, `token of "e2e-caller" cannot impersonate`},
		{"rule for one namespace used on another", "GET", "/clusters/prod/api/v1/namespaces/" + nsB + "/pods", valid, nil, 403,
			`token of "e2e-caller" cannot list resource "pods" in API group "" in the namespace "` + nsB + `" (it needs --rule list:pods:` + nsB + `)`},
		{"namespaced rule used for a cluster-wide list", "GET", "/clusters/prod/api/v1/pods?labelSelector=" + marker, valid, nil, 403,
			`token of "e2e-caller" cannot list resource "pods" in API group "" at the cluster scope`},
		{"secrets are not pods", "GET", "/clusters/prod/api/v1/namespaces/" + nsA + "/secrets", valid, nil, 403,
			`token of "e2e-caller" cannot list resource "secrets" in API group "" in the namespace "` + nsA + `"`},
		{"delete is not granted", "DELETE", podsA + "/victim", valid, nil, 403,
			`token of "e2e-caller" cannot delete resource "pods" in API group "" in the namespace "` + nsA + `"`},
		{"exec in another namespace", "POST", "/clusters/prod/api/v1/namespaces/" + nsB + "/pods/x/exec?command=id", valid, nil, 403,
			`token of "e2e-caller" cannot create resource "pods/exec" in API group "" in the namespace "` + nsB + `"`},
		{"websocket exec needs create, not get", "GET", "/clusters/prod/api/v1/namespaces/" + nsB + "/pods/x/exec?command=id", callerToken(t, []string{"prod"}, "get:pods/exec:"+nsB), nil, 403,
			`token of "e2e-caller" cannot create resource "pods/exec" in API group "" in the namespace "` + nsB + `"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := send(t, c, gs, tc.method, tc.path, tc.token, tc.header)
			if got.code != tc.code || !strings.HasPrefix(got.message, tc.message) {
				t.Fatalf("got %d %q\nwant %d %q...", got.code, got.message, tc.code, tc.message)
			}
		})
	}

	// A caller token cannot open a tunnel, nor join as a connector (nor can any bearer token: /connect takes
	// key-bound credentials only).
	for _, ep := range []struct{ method, path, want string }{
		{"GET", "/connect", "a connector token alone no longer opens a tunnel: the connector must exchange it at /connect/join for a credential bound to its key; upgrade the connector to this gateway's version"},
		{"POST", "/connect/join", `invalid connector token: token audience [warren] does not include \"warren-connector\"`},
	} {
		req, _ := http.NewRequest(ep.method, gs.url()+ep.path, nil)
		req.Header.Set("Authorization", "Bearer "+valid)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(string(body), ep.want) {
			t.Fatalf("caller token on %s %s: %d %s", ep.method, ep.path, resp.StatusCode, body)
		}
	}

	neverSeen(t, marker)

	// The same token does what it allows: the API server answers (404: the namespace does not exist).
	if got := send(t, c, gs, "GET", podsA+"/nothing-here", valid, nil); got.code != 404 || !strings.Contains(got.message, `pods "nothing-here" not found`) {
		t.Fatalf("allowed request: %d %q, want the API server's 404", got.code, got.message)
	}
}

// TestTwoPointEnforcement: the connector's check is "the gateway vouches for this exact request, within the
// ceiling". A gateway signing with a key the connector does not pin (a stand-in, or a misconfiguration) gets
// nothing past it; a gateway that trusts an issuer key it should not (compromised or misconfigured) still cannot
// exceed the customer's ceiling; and a broad token stays under the ceiling.
func TestTwoPointEnforcement(t *testing.T) {
	marker := fmt.Sprintf("two%d", time.Now().UnixNano()%1e9)
	ceiling, err := auth.ParsePolicy([]byte("rules:\n- verbs: [get, list]\n  resources: [pods]\n  namespaces: [" + marker + "-a]\n"))
	if err != nil {
		t.Fatal(err)
	}
	broad := callerToken(t, []string{"prod"}, "*:*:*")
	podsA := "/clusters/prod/api/v1/namespaces/" + marker + "-a/pods"

	// A gateway whose assertion key the connector does not pin.
	stranger, _ := newSigningKey(t)
	impostor := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{signingKey: stranger})
	startConnector(t, impostor, "prod", connectorOpts{name: "strict", ceiling: ceiling})
	impostor.waitConnectors("prod", 1, 10*time.Second)
	got := send(t, rawClient(t, impostor), impostor, "GET", podsA, broad, nil)
	if want := fmt.Sprintf("connector refused the gateway's assertion: assertion is signed by unknown key id %q", stranger.KeyID); got.code != 401 || got.message != want {
		t.Fatalf("a gateway key the connector does not pin: %d %q\nwant 401 %q", got.code, got.message, want)
	}

	// A gateway that trusts a rogue issuer: the rogue's token passes the gateway, the ceiling still holds.
	rogue, _ := newSigningKey(t)
	rogueKeys, err := auth.NewStaticKeys(rogue.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	gs := startGatewayWith(t, "127.0.0.1:0", gatewayOpts{extraCallerKeys: rogueKeys})
	startConnector(t, gs, "prod", connectorOpts{name: "strict", ceiling: ceiling})
	gs.waitConnectors("prod", 1, 10*time.Second)
	c := rawClient(t, gs)
	rogueToken, err := rogue.IssueCaller(auth.IssueOptions{Subject: "mallory", Clusters: []string{"prod"}, TTL: time.Hour,
		Rules: []auth.Rule{{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}, Namespaces: []string{"*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, message string }{
		{"/api/v1/namespaces/" + marker + "-b/pods", `connector: the cluster's policy does not allow it: cannot list resource "pods" in API group "" in the namespace "` + marker + `-b"`},
		{"/api/v1/namespaces/" + marker + "-a/secrets", `connector: the cluster's policy does not allow it: cannot list resource "secrets" in API group "" in the namespace "` + marker + `-a"`},
		{"/api/v1/namespaces/" + marker + "-a/pods/p/exec?command=sh", `connector: the cluster's policy does not allow it: cannot create resource "pods/exec"`},
	} {
		method := "GET"
		if strings.Contains(tc.path, "/exec") {
			method = "POST"
		}
		for who, tok := range map[string]string{"rogue": rogueToken, "broad": broad} {
			got := send(t, c, gs, method, "/clusters/prod"+tc.path, tok, nil)
			if got.code != 403 || !strings.HasPrefix(got.message, tc.message) {
				t.Errorf("%s token, %s under the ceiling: %d %q, want 403 %q", who, tc.path, got.code, got.message, tc.message)
			}
		}
	}
	neverSeen(t, marker)

	// Within the ceiling the broad token works.
	if got := send(t, c, gs, "GET", podsA, broad, nil); got.code != 200 {
		t.Fatalf("within the ceiling: %d %q", got.code, got.message)
	}
}

// TestImpersonation: with --impersonate, Kubernetes RBAC and audit see the caller, not the connector.
func TestImpersonation(t *testing.T) {
	ns := fmt.Sprintf("imp%d", time.Now().UnixNano()%1e9)
	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, "prod", connectorOpts{name: "imp", impersonate: true})
	gs.waitConnectors("prod", 1, 10*time.Second)
	admin := clientset(t, kube.RestConfig(kubetest.UserAdmin))
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })

	tok, err := keys.IssueCaller(auth.IssueOptions{Subject: "alice", Clusters: []string{"prod"}, Groups: []string{"ir-team"},
		TTL: time.Hour, Rules: []auth.Rule{{Verbs: []string{"list"}, Resources: []string{"pods"}, Namespaces: []string{ns}}}})
	if err != nil {
		t.Fatal(err)
	}
	c := rawClient(t, gs)
	path := "/clusters/prod/api/v1/namespaces/" + ns + "/pods"
	// warren allows it, Kubernetes does not: alice has no RoleBinding yet.
	got := send(t, c, gs, "GET", path, tok, nil)
	if got.code != 403 || got.message != `pods is forbidden: User "warren:alice" cannot list resource "pods" in API group "" in the namespace "`+ns+`"` {
		t.Fatalf("before the RoleBinding: %d %q", got.code, got.message)
	}
	// The cluster admin binds the group (see README "Impersonation mode"). The aggregated "view" role has no rules
	// without a controller-manager, so the test brings its own role.
	_, err = admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules:      []rbacv1.PolicyRule{{Verbs: []string{"get", "list"}, APIGroups: []string{""}, Resources: []string{"pods"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ir-team-pod-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "ir-team"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "RBAC lets warren:alice list pods", func() bool {
		return send(t, c, gs, "GET", path, tok, nil).code == 200
	})
	var claims jwt.RegisteredClaims
	jwt.NewParser().ParseUnverified(tok, &claims)
	wait.Until(t, 10*time.Second, "the API server's audit names alice", func() bool {
		events, _ := kube.AuditEvents()
		for _, e := range events {
			if e.RequestURI == "/api/v1/namespaces/"+ns+"/pods" && e.Code == 200 && e.User == kubetest.UserConnector &&
				e.ImpersonatedUser == "warren:alice" && len(e.ImpersonatedExtra["warren-token-id"]) == 1 &&
				e.ImpersonatedExtra["warren-token-id"][0] == claims.ID {
				return true
			}
		}
		return false
	})
}
