package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"sigs.k8s.io/yaml"
)

// maxPolicyBytes bounds a policy file.
const maxPolicyBytes = 1 << 20

// Policy is the connector's ceiling: a request must be allowed by the caller's token and by the policy. Its file
// form is YAML (or JSON) with the token's rule format:
//
//	rules:
//	- verbs: [get, list, watch]
//	  resources: ["*"]
//	  apiGroups: ["*"]
//	- verbs: [create]
//	  resources: [pods/exec]
//	  namespaces: [payments]
type Policy struct {
	Rules []Rule `json:"rules"`
}

// LoadPolicy reads and validates a policy file. Unknown or duplicate fields are errors, so a typo (namespace:
// instead of namespaces:) cannot silently widen a rule.
func LoadPolicy(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("policy file %s does not exist", path)
		}
		return nil, fmt.Errorf("failed to read policy: %w", err)
	}
	p, err := ParsePolicy(data)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses and validates a policy document (see LoadPolicy).
func ParsePolicy(data []byte) (*Policy, error) {
	if len(data) > maxPolicyBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxPolicyBytes)
	}
	var p Policy
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return nil, err
	}
	if len(p.Rules) == 0 {
		return nil, errors.New("no rules; a policy without rules would deny every request")
	}
	for i, r := range p.Rules {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("rule %d (%s): %w", i+1, r, err)
		}
	}
	return &p, nil
}

// Authorize is Authorize(p.Rules, a), but for what its podSpec rules restrict (PodSpecFor): a request they refuse
// is refused, and a pod creation they speak for is refused here (only the connector's check of its body can allow
// it). A nil policy has no rules.
func (p *Policy) Authorize(a Attributes) (bool, string) {
	if p == nil {
		return Authorize(nil, a)
	}
	if d := p.PodSpecFor(a); d.Refusal != "" {
		return false, d.Refusal
	} else if d.Check != nil {
		return false, "a pod created in namespace " + a.Namespace + " must be " + d.describe() + " (a podSpec rule): its body is checked by the connector"
	}
	return Authorize(p.Rules, a)
}
