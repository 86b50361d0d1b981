package helm

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnvironmentNamesFlags: every WARREN_* variable a chart sets is a flag of the command the pod runs, so that
// no setting (a key, a policy) is silently ignored. The binary itself would only warn.
func TestEnvironmentNamesFlags(t *testing.T) {
	bin := buildWarren(t)
	help := map[string]string{}
	for _, cmd := range []string{"gateway", "connector"} {
		out, _ := exec.Command(bin, cmd, "--help").CombinedOutput()
		help[cmd] = string(out)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			deploy := only(t, decode(t, render(t, c, c.chart, "warren")), "Deployment")
			containers, _ := dig(deploy, "spec", "template", "spec", "containers").([]any)
			args := list(dig(containers[0], "args"))
			cmd := args[0]
			env, _ := dig(containers[0], "env").([]any)
			seen := 0
			for _, e := range env {
				name, _ := dig(e, "name").(string)
				flagName, ok := strings.CutPrefix(name, "WARREN_")
				if !ok {
					continue
				}
				seen++
				flagName = strings.ToLower(strings.ReplaceAll(flagName, "_", "-"))
				if !strings.Contains(help[cmd], "\n  -"+flagName+" ") && !strings.Contains(help[cmd], "\n  -"+flagName+"\n") {
					t.Errorf("the chart sets %s, but warren %s has no flag --%s", name, cmd, flagName)
				}
			}
			if seen < 4 {
				t.Fatalf("only %d WARREN_ variables in the %s Deployment", seen, c.name)
			}
		})
	}
}

// buildWarren builds the warren binary into a temporary directory and returns its path.
func buildWarren(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "warren")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/warren-dev/warren/cmd/warren").CombinedOutput(); err != nil {
		t.Fatalf("building warren: %v\n%s", err, out)
	}
	return bin
}
