// Package awsconfig loads the AWS SDK's configuration the way every warren command that talks to AWS does: the
// standard chain, with the command's region and endpoint overrides. The connector's EKS access (--eks-cluster),
// bootstrap's SSM client and acquire's object storage (--out s3://) all start here, so that credentials and region
// are found the same way everywhere.
package awsconfig

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Load loads the standard AWS configuration chain (environment, shared files, SSO, web identity, container and
// instance roles). A region that is not "" overrides the chain's; an endpointURL that is not "" becomes the base
// endpoint of every client made from the result (a VPC endpoint, an S3-compatible store, a test's stand-in). The
// Region of the result is "" when nothing names one: callers say which flag to give.
func Load(ctx context.Context, region, endpointURL string) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("cannot load the AWS configuration: %v", err)
	}
	if endpointURL != "" {
		cfg.BaseEndpoint = aws.String(endpointURL)
	}
	return cfg, nil
}
