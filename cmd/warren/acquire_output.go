package main

import (
	"errors"
	"flag"
	"path/filepath"
	"strings"

	"github.com/warren-dev/warren/acquire"
)

// addOutputFlags binds the object-storage flags of --out s3://BUCKET/PREFIX to o; --staging-dir only for a command
// that writes. Opening the output is package acquire's (acquire.Output).
func addOutputFlags(fs *flag.FlagSet, o *acquire.Output, writes bool) {
	fs.StringVar(&o.S3Endpoint, "s3-endpoint", "", "with s3://: the S3 API's URL of an S3-compatible store (MinIO, Ceph, SeaweedFS...); default: AWS")
	fs.BoolVar(&o.S3PathStyle, "s3-path-style", false, "with s3://: address the bucket in the URL's path (ENDPOINT/BUCKET/KEY), as most S3-compatible stores need")
	fs.StringVar(&o.S3Region, "s3-region", "", "with s3://: the bucket's region; default: the AWS chain's (AWS_REGION, the profile's), else us-east-1 with --s3-endpoint")
	if writes {
		fs.StringVar(&o.StagingDir, "staging-dir", "", "with s3://: where objects are written before they are uploaded, and kept when an upload fails; default: "+
			filepath.Join("$XDG_CACHE_HOME", "warren", "staging", "BUCKET", "PREFIX"))
	}
}

// acquireErr makes a configuration error of package acquire a usage error (exit 2), with its message unchanged.
func acquireErr(err error) error {
	if err != nil && errors.Is(err, acquire.ErrUsage) {
		return usageErr("%s", strings.TrimPrefix(err.Error(), acquire.ErrUsage.Error()+": "))
	}
	return err
}
