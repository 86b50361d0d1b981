package audit

import (
	"fmt"
	"os"

	"github.com/warren-dev/warren/auth"
)

// OpenLog opens the audit log of component at path ("-": standard output), its checkpoints signed with the key in
// signingKeyFile when it is not "" (signing.key of `warren keygen`). Errors name the flag of the setting at fault
// (--audit-log, --audit-signing-key).
func OpenLog(path, signingKeyFile, component string) (*Log, error) {
	cfg := DefaultConfig()
	cfg.Component = component
	if signingKeyFile != "" {
		k, err := auth.LoadSigningKey(signingKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--audit-signing-key: %w", err)
		}
		cfg.SigningKey, cfg.KeyID = k.Key, k.KeyID
	}
	var l *Log
	var err error
	if path == "-" {
		l, err = NewWithConfig(os.Stdout, cfg)
	} else {
		l, err = OpenWithConfig(path, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("--audit-log: %w", err)
	}
	return l, nil
}
