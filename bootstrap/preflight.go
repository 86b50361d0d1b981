package bootstrap

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/warren-dev/warren/internal/download"
)

// FetchDigests asks the gateway, from where bootstrap runs, for the SHA-256 of each connector binary it serves
// (GET /download/warren-PLATFORM.sha256), by platform. client must verify the gateway as the connector will (CA,
// pins). It fails when the gateway cannot be reached or serves no binary at all: better said before anything is
// sent to the instances.
func FetchDigests(ctx context.Context, client *http.Client, gateway string) (map[string]string, error) {
	gateway = strings.TrimSuffix(gateway, "/")
	digests := map[string]string{}
	for _, p := range download.Platforms {
		name := download.BinaryName(p)
		url := gateway + download.Prefix + name + ".sha256"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, fmt.Errorf("bad gateway URL %q: %v", gateway, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("cannot reach the gateway from here to check its downloads: %w "+
				"(check --gateway, --ca-file and --pin; or pass --no-preflight if only the instances can reach it)", err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusNotFound:
			continue
		default:
			return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		fields := strings.Fields(string(body))
		if len(fields) < 1 || !hexDigest.MatchString(fields[0]) {
			return nil, fmt.Errorf("GET %s: not a SHA-256 digest: %q", url, strings.TrimSpace(string(body)))
		}
		digests[p] = fields[0]
	}
	if len(digests) == 0 {
		return nil, fmt.Errorf("the gateway at %s serves no connector binary under %s: start it with --download-dir "+
			"holding warren-linux-amd64 and/or warren-linux-arm64 (a linux gateway serves its own platform by itself)", gateway, download.Prefix)
	}
	return digests, nil
}
