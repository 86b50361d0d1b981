package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/internal/testenv/kubetest"
)

// impersonatingHeaders are what a caller sends to be taken for the cluster's administrator by an API server that
// trusts request-header authentication, in a few spellings.
var impersonatingHeaders = http.Header{
	"X-Remote-User":         {"system:admin"},
	"X-Remote-Group":        {"system:masters"},
	"X-Remote-Uid":          {"0"},
	"X-Remote-Extra-Scopes": {"everything"},
	"x-remote-group":        {"system:masters"}, // sent as written: not in canonical form
}

// selfSubjectReview asks the API server who the request is, through c at url, with header added.
func selfSubjectReview(t *testing.T, c *http.Client, url, token string, header http.Header) (int, authenticationv1.UserInfo) {
	t.Helper()
	body := `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`
	req, err := http.NewRequest("POST", url+"/apis/authentication.k8s.io/v1/selfsubjectreviews", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var review authenticationv1.SelfSubjectReview
	if resp.StatusCode == http.StatusCreated {
		if err := json.NewDecoder(bytes.NewReader(b)).Decode(&review); err != nil {
			t.Fatalf("SelfSubjectReview answer %q: %v", b, err)
		}
	} else {
		t.Logf("SelfSubjectReview: %d %s", resp.StatusCode, b)
	}
	return resp.StatusCode, review.Status.UserInfo
}

// TestCallerCannotAssertAnIdentity: the API server trusts request-header authentication (a front proxy) and the
// connector authenticates with the front proxy's client certificate, besides its token: the situation in which
// X-Remote-User is believed. A caller sending X-Remote-User: system:admin through warren is still the connector.
func TestCallerCannotAssertAnIdentity(t *testing.T) {
	fp := kube.RestConfig(kubetest.UserConnector)
	fp.CertFile, fp.KeyFile = kube.FrontProxyCertFile, kube.FrontProxyKeyFile

	// The premise: with that certificate, the API server believes the headers.
	tr, err := rest.TransportFor(fp)
	if err != nil {
		t.Fatal(err)
	}
	direct := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer direct.CloseIdleConnections()
	code, who := selfSubjectReview(t, direct, kube.URL, "", impersonatingHeaders)
	if code != http.StatusCreated || who.Username != "system:admin" || !slices.Contains(who.Groups, "system:masters") {
		t.Fatalf("the API server does not trust the front proxy's headers (%d %+v): the test proves nothing", code, who)
	}
	code, who = selfSubjectReview(t, direct, kube.URL, "", nil)
	if code != http.StatusCreated || who.Username != kubetest.UserConnector {
		t.Fatalf("without the headers the connector is %d %+v, want %s", code, who, kubetest.UserConnector)
	}

	gs := startGateway(t, "127.0.0.1:0")
	startConnector(t, gs, "prod", connectorOpts{name: "front-proxy", kube: fp})
	gs.waitConnectors("prod", 1, 10*time.Second)
	token := callerToken(t, []string{"prod"}, "create:selfsubjectreviews.authentication.k8s.io")
	code, who = selfSubjectReview(t, rawClient(t, gs), gs.url()+"/clusters/prod", token, impersonatingHeaders)
	if code != http.StatusCreated || who.Username != kubetest.UserConnector || slices.Contains(who.Groups, "system:masters") ||
		who.UID == "0" || len(who.Extra["scopes"]) != 0 {
		t.Fatalf("through warren with X-Remote-* headers the API server saw %d %+v, want %s and nothing the caller sent",
			code, who, kubetest.UserConnector)
	}
}
