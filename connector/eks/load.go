package eks

import (
	"context"
	"fmt"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/internal/awsconfig"
)

// KubeConfig builds the API server config of an EKS cluster from outside it: endpoint and CA from EKS
// DescribeCluster, renewed STS tokens, AWS credentials from the standard chain. region and endpointURL may be ""
// (AWS_REGION or the shared config; the public endpoints).
func KubeConfig(ctx context.Context, cluster, region, endpointURL string) (*rest.Config, error) {
	cfg, err := awsconfig.Load(ctx, region, endpointURL)
	if err != nil {
		return nil, err
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("--eks-cluster %s: no AWS region: pass --region (or set AWS_REGION)", cluster)
	}
	return RestConfig(ctx, Config{Cluster: cluster, AWS: cfg})
}
