package awsfake

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
)

// serveEKS answers DescribeCluster: GET /clusters/{name}, REST-JSON.
func (s *Server) serveEKS(w http.ResponseWriter, r *http.Request, body []byte) {
	if _, sig, err := s.authenticate(r, body, "eks"); err != nil {
		code, typ, msg := authError(err)
		if typ == "InvalidClientTokenId" {
			typ = "UnrecognizedClientException"
		}
		writeJSONError(w, code, typ, msg)
		return
	} else if sig.region != s.cfg.Region {
		writeJSONError(w, http.StatusForbidden, "InvalidSignatureException", fmt.Sprintf("credential should be scoped to a valid region, not %q", sig.region))
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/clusters/")
	if r.Method != http.MethodGet || !ok || name == "" || strings.Contains(name, "/") {
		writeJSONError(w, http.StatusBadRequest, "InvalidRequestException", "awsfake implements only DescribeCluster (GET /clusters/{name})")
		return
	}
	s.mu.Lock()
	clusters := append([]Cluster(nil), s.cfg.Clusters...)
	s.mu.Unlock()
	for _, c := range clusters {
		if c.Name != name {
			continue
		}
		version := c.Version
		if version == "" {
			version = "1.37"
		}
		writeJSON(w, "application/json", map[string]any{"cluster": map[string]any{
			"name":                 c.Name,
			"arn":                  fmt.Sprintf("arn:aws:eks:%s:%s:cluster/%s", s.cfg.Region, s.cfg.Identities[0].Account, c.Name),
			"createdAt":            1.7e9,
			"version":              version,
			"endpoint":             c.Endpoint,
			"roleArn":              fmt.Sprintf("arn:aws:iam::%s:role/eks-cluster", s.cfg.Identities[0].Account),
			"status":               "ACTIVE",
			"platformVersion":      "eks.1",
			"certificateAuthority": map[string]string{"data": base64.StdEncoding.EncodeToString(c.CAPEM)},
			"resourcesVpcConfig": map[string]any{
				"endpointPublicAccess":  false,
				"endpointPrivateAccess": true,
			},
			"accessConfig": map[string]string{"authenticationMode": "API_AND_CONFIG_MAP"},
		}})
		return
	}
	writeJSONError(w, http.StatusNotFound, "ResourceNotFoundException", fmt.Sprintf("No cluster found for name: %s.", name))
}

// SetCluster adds a cluster DescribeCluster reports, or replaces the one of the same name: a test can start the
// Server first, give its URL to the API server it starts (the token webhook), then describe that API server.
func (s *Server) SetCluster(c Cluster) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.cfg.Clusters {
		if s.cfg.Clusters[i].Name == c.Name {
			s.cfg.Clusters[i] = c
			return
		}
	}
	s.cfg.Clusters = append(s.cfg.Clusters, c)
}
