package awsconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// awsEnv points the AWS chain at a shared config file of the test's own, with nothing else from the environment.
func awsEnv(t *testing.T, sharedConfig string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "AWS_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "config")
	if err := os.WriteFile(file, []byte(sharedConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", file)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func TestLoad(t *testing.T) {
	const profile = "[default]\nregion = eu-west-1\n[profile other]\nregion = ap-south-1\n"
	for _, c := range []struct {
		name, config, profile, region, endpoint string
		wantRegion, wantEndpoint                string
	}{
		{"the shared config's region", profile, "", "", "", "eu-west-1", ""},
		{"the profile's region", profile, "other", "", "", "ap-south-1", ""},
		{"the override wins", profile, "other", "us-east-2", "", "us-east-2", ""},
		{"no region anywhere", "", "", "", "", "", ""},
		{"an endpoint", "", "", "", "https://s3.internal:9000", "", "https://s3.internal:9000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			awsEnv(t, c.config)
			if c.profile != "" {
				t.Setenv("AWS_PROFILE", c.profile)
			}
			cfg, err := Load(t.Context(), c.region, c.endpoint)
			if err != nil {
				t.Fatal(err)
			}
			endpoint := ""
			if cfg.BaseEndpoint != nil {
				endpoint = *cfg.BaseEndpoint
			}
			if cfg.Region != c.wantRegion || endpoint != c.wantEndpoint {
				t.Errorf("region %q, endpoint %q; want %q, %q", cfg.Region, endpoint, c.wantRegion, c.wantEndpoint)
			}
		})
	}
}

// A profile that does not exist is an error that says what could not be loaded, not a silent default.
func TestLoadMissingProfile(t *testing.T) {
	awsEnv(t, "[default]\nregion = eu-west-1\n")
	t.Setenv("AWS_PROFILE", "nope")
	_, err := Load(t.Context(), "", "")
	const want = "cannot load the AWS configuration: failed to get shared config profile, nope"
	if err == nil || err.Error() != want {
		t.Fatalf("%v\nwant %s", err, want)
	}
}
