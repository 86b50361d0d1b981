package acquire

import (
	"context"
	"io"

	"github.com/warren-dev/warren/client"
	"github.com/warren-dev/warren/evidence"
)

// RunConfig is an acquisition as `warren acquire` describes it: the run's settings, and the files and endpoints
// that the rest of its Config comes from (Open).
type RunConfig struct {
	// Config is the run's settings; Open sets REST, Cluster, Store and Signer.
	Config Config
	// Client says how to reach the cluster: through the gateway, or a kubeconfig.
	Client client.Config
	// Output is where the evidence goes.
	Output Output
	// SigningKeyFile is the examiner's Ed25519 key (signing.key of warren keygen), which signs every statement.
	SigningKeyFile string
}

// Open loads the examiner's key, opens the output and takes its run lock (unlock gives it back; see
// Output.OpenForAcquire, which reports on report what an earlier run left staged), and builds the client, and
// returns the Config that Run takes. Settings that cannot go together match ErrUsage.
func (rc RunConfig) Open(ctx context.Context, report io.Writer) (_ Config, unlock func(), _ error) {
	c := rc.Config
	signer, err := evidence.LoadSigner(rc.SigningKeyFile)
	if err != nil {
		return c, nil, err
	}
	store, unlock, err := rc.Output.OpenForAcquire(ctx, signer, report)
	if err != nil {
		return c, nil, err
	}
	restCfg, err := rc.Client.RESTConfig(ctx)
	if err != nil {
		unlock()
		return c, nil, err
	}
	c.REST, c.Cluster, c.Store, c.Signer = restCfg, rc.Client.Cluster, store, signer
	return c, unlock, nil
}
