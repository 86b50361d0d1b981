package eks

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"k8s.io/client-go/rest"
)

// KubeConfig builds the API server config of an EKS cluster from outside it: endpoint and CA from EKS
// DescribeCluster, renewed STS tokens, AWS credentials from the standard chain. region and endpointURL may be ""
// (AWS_REGION or the shared config; the public endpoints).
func KubeConfig(ctx context.Context, cluster, region, endpointURL string) (*rest.Config, error) {
	cfg, err := LoadAWSConfig(ctx, region, endpointURL)
	if err != nil {
		return nil, err
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("--eks-cluster %s: no AWS region: pass --region (or set AWS_REGION)", cluster)
	}
	return RestConfig(ctx, Config{Cluster: cluster, AWS: cfg})
}

// LoadAWSConfig loads the standard AWS configuration chain (environment, shared files, SSO, web identity, container
// and instance roles), with an optional region and endpoint URL override.
func LoadAWSConfig(ctx context.Context, region, endpointURL string) (aws.Config, error) {
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
