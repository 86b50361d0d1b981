package awsfake

import (
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	authv1 "k8s.io/api/authentication/v1"
)

const stsNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"

// EKSTokenPrefix starts an EKS bearer token: the rest is the base64url (no padding) of a presigned
// GetCallerIdentity URL.
const EKSTokenPrefix = "k8s-aws-v1."

// ClusterIDHeader is the header a presigned GetCallerIdentity URL must have signed for an EKS token: it binds the
// token to one cluster.
const ClusterIDHeader = "x-k8s-aws-id"

// serveSTS answers GetCallerIdentity, signed in the Authorization header (POST, form body) or presigned (GET).
func (s *Server) serveSTS(w http.ResponseWriter, r *http.Request, body []byte) {
	params := r.URL.Query()
	if r.Method == http.MethodPost {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			writeQueryError(w, http.StatusBadRequest, "MalformedInput", err.Error())
			return
		}
		for k, v := range form {
			params[k] = v
		}
	}
	id, _, err := s.authenticate(r, body, "sts")
	if err != nil {
		code, errCode, msg := authError(err)
		writeQueryError(w, code, errCode, msg)
		return
	}
	switch params.Get("Action") {
	case "GetCallerIdentity":
		writeCallerIdentity(w, id)
	default:
		writeQueryError(w, http.StatusBadRequest, "InvalidAction", fmt.Sprintf("awsfake does not implement STS %s", params.Get("Action")))
	}
}

func writeCallerIdentity(w http.ResponseWriter, id *Identity) {
	type result struct {
		Arn     string
		UserId  string
		Account string
	}
	type response struct {
		XMLName  xml.Name `xml:"GetCallerIdentityResponse"`
		Xmlns    string   `xml:"xmlns,attr"`
		Result   result   `xml:"GetCallerIdentityResult"`
		Metadata struct {
			RequestID string `xml:"RequestId"`
		} `xml:"ResponseMetadata"`
	}
	resp := response{Xmlns: stsNamespace, Result: result{Arn: id.ARN, UserId: id.UserID, Account: id.Account}}
	resp.Metadata.RequestID = newID()
	w.Header().Set("Content-Type", "text/xml")
	xml.NewEncoder(w).Encode(resp)
}

// VerifyEKSToken checks a k8s-aws-v1 bearer token for a cluster as aws-iam-authenticator and STS do together: the
// presigned URL points at this Server's STS, asks for GetCallerIdentity, has the cluster id header signed, and its
// signature and date are valid for a known identity. It returns that identity.
func (s *Server) VerifyEKSToken(token, cluster string) (*Identity, error) {
	enc, ok := strings.CutPrefix(token, EKSTokenPrefix)
	if !ok {
		return nil, fmt.Errorf("token does not start with %s", EKSTokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
	if err != nil {
		return nil, fmt.Errorf("token is not base64url: %v", err)
	}
	u, err := url.Parse(string(raw))
	if err != nil {
		return nil, fmt.Errorf("token holds no URL: %v", err)
	}
	self, _ := url.Parse(s.URL)
	switch {
	case u.Host != self.Host:
		return nil, fmt.Errorf("token URL host %q is not this STS (%s)", u.Host, self.Host)
	case u.Path != "/" && u.Path != "":
		return nil, fmt.Errorf("token URL path %q is not /", u.Path)
	case u.Query().Get("Action") != "GetCallerIdentity":
		return nil, fmt.Errorf("token URL action %q is not GetCallerIdentity", u.Query().Get("Action"))
	}
	sig, ok, err := parseSignature(&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}})
	if err != nil {
		return nil, err
	}
	if !ok || !sig.presigned {
		return nil, errors.New("token URL is not presigned")
	}
	if sig.service != "sts" {
		return nil, fmt.Errorf("token URL is signed for service %q, not sts", sig.service)
	}
	if !slices.Contains(sig.signedHeaders, ClusterIDHeader) {
		return nil, fmt.Errorf("token URL does not sign the %s header: it is not bound to a cluster", ClusterIDHeader)
	}
	headers := func(name string) (string, bool) {
		switch name {
		case "host":
			return u.Host, true
		case ClusterIDHeader:
			return cluster, true
		}
		return "", false
	}
	id, err := s.checkSignature(&sig, http.MethodGet, u, headers, nil)
	if err != nil {
		return nil, fmt.Errorf("token rejected by STS (for cluster %q): %w", cluster, err)
	}
	return id, nil
}

// webhookPrefix is where the token webhook is served: POST webhookPrefix + CLUSTER.
const webhookPrefix = "/awsfake/tokenreview/"

// WebhookKubeconfig returns the file kube-apiserver's --authentication-token-webhook-config-file wants for the token
// webhook of cluster: users authenticated by EKS tokens for that cluster, named by their ARN.
func (s *Server) WebhookKubeconfig(cluster string) []byte {
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: awsfake
  cluster:
    server: %s%s%s
users:
- name: kube-apiserver
  user: {}
contexts:
- name: webhook
  context: {cluster: awsfake, user: kube-apiserver}
current-context: webhook
`, s.URL, webhookPrefix, url.PathEscape(cluster)))
}

// serveTokenReview answers a TokenReview (authentication.k8s.io v1 or v1beta1, same shape).
func (s *Server) serveTokenReview(w http.ResponseWriter, r *http.Request, body []byte) {
	cluster := strings.TrimPrefix(r.URL.Path, webhookPrefix)
	var review authv1.TokenReview
	if r.Method != http.MethodPost || json.Unmarshal(body, &review) != nil {
		http.Error(w, "want a TokenReview", http.StatusBadRequest)
		return
	}
	resp := authv1.TokenReview{TypeMeta: review.TypeMeta}
	if resp.APIVersion == "" {
		resp.APIVersion, resp.Kind = "authentication.k8s.io/v1", "TokenReview"
	}
	id, err := s.VerifyEKSToken(review.Spec.Token, cluster)
	if err != nil {
		s.log.Info("token review refused", "cluster", cluster, "err", err)
		resp.Status.Error = err.Error()
	} else {
		resp.Status.Authenticated = true
		resp.Status.User = authv1.UserInfo{
			Username: id.ARN,
			UID:      "aws-iam-authenticator:" + id.Account + ":" + id.UserID,
			Groups:   s.cfg.WebhookGroups,
			Extra:    map[string]authv1.ExtraValue{"arn": {id.ARN}, "accesskeyid": {id.AccessKeyID}},
		}
	}
	writeJSON(w, "application/json", resp)
}
