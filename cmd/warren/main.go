// Command warren is warren's one binary: the gateway, the connector, and the tools around them.
// It only parses flags (and WARREN_* environment variables): each command is an Options type (AddFlags, and
// Validate into the library's Config) in a file of its own, run by runOptions; the work is the libraries'.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

type command struct {
	run  func(args []string, stdout, stderr io.Writer) error
	help string
}

var commands = map[string]command{
	"gateway":    {runGateway, "run the gateway: connectors dial in, callers reach /clusters/<cluster>/"},
	"connector":  {runConnector, "run the connector inside the private network: dials out to the gateway"},
	"keygen":     {runKeygen, "write an Ed25519 signing key pair"},
	"token":      {runToken, "issue a caller token (token issue) or a connector's join token (token connector)"},
	"kubeconfig": {runKubeconfig, "print a kubeconfig that reaches a cluster through the gateway"},
	"credential": {runCredential, "exec credential plugin for kubectl (used by kubeconfig --token-command)"},
	"audit":      {runAudit, "check an audit log's hash chain (audit verify FILE)"},
	"bootstrap":  {runBootstrap, "install the connector on private instances through AWS SSM (bootstrap ssm)"},
	"sign":       {runSign, "sign release files (the connector binaries) with a warren keygen key: FILE.sig"},
	"acquire":    {runAcquire, "acquire forensic evidence from containers through the gateway (acquire verify DIR checks it)"},
	"version":    {runVersion, "print the version"},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and turns its error into one line on stderr and an exit code: 2 for a usage
// error, 1 when the command failed.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "warren: unknown command %q; run `warren --help` for the list\n", args[0])
		return 2
	}
	// Flag output (usage) is held back: shown for --help, dropped when parsing failed, so that an error is one line.
	var flagOut bytes.Buffer
	err := cmd.run(args[1:], stdout, &flagOut)
	switch {
	case errors.Is(err, flag.ErrHelp):
		stderr.Write(flagOut.Bytes())
		return 0
	case err != nil:
		msg := err.Error()
		var ec *exitCodeError
		if errors.As(err, &ec) {
			fmt.Fprintf(stderr, "warren %s: %s\n", args[0], msg)
			return ec.code
		}
		var ue *usageError
		if isFlagError(msg) || errors.As(err, &ue) {
			fmt.Fprintf(stderr, "warren %s: %s; run `warren %s --help` for the flags\n", args[0], msg, args[0])
			return 2
		}
		fmt.Fprintf(stderr, "warren %s: %s\n", args[0], msg)
		return 1
	}
	stderr.Write(flagOut.Bytes())
	return 0
}

// exitCodeError is an error that a command ends with another exit code than 1 (see the command's help).
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// usageError is a command line that cannot run, with what to change: exit 2, like a flag error.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErr(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func isFlagError(msg string) bool {
	for _, p := range []string{"flag provided but not defined", "invalid value", "invalid boolean", "bad flag syntax", "flag needs an argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func usage(w io.Writer) {
	fmt.Fprint(w, "warren: reach the Kubernetes API of private clusters through an outbound tunnel\n\nusage: warren COMMAND [flags]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, commands[n].help)
	}
	fmt.Fprint(w, "\nEvery flag can also be set by an environment variable WARREN_<FLAG>, e.g. WARREN_TOKEN_FILE for --token-file.\n`warren COMMAND --help` lists a command's flags.\n")
}

// parseFlags parses args into fs, fills unset flags from WARREN_* variables, and refuses stray arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs, envPrefix); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; flags come before arguments, see --help", fs.Arg(0))
	}
	return nil
}

// options are a command's flags: AddFlags binds them, Validate turns them into what the library runs. Validate
// checks the flags together and opens no file: the library does, and says which flag was at fault.
type options[C any] interface {
	AddFlags(*flag.FlagSet)
	Validate() (C, error)
}

// argsParser is implemented by the options of a command that takes arguments besides its flags (FILE, POD...):
// ParseArgs parses args into fs as that command reads them and keeps the arguments for Validate. Options without
// it take flags only (parseFlags).
type argsParser interface {
	ParseArgs(fs *flag.FlagSet, args []string) error
}

// cli is how a command reads its command line.
type cli struct {
	name  string // "warren acquire verify": the flag set's name
	usage string // what --help prints before the list of flags; "" for the flag package's "Usage of NAME:"
	// usageOnly: --help prints usage alone, which describes every flag itself.
	usageOnly bool
	// signals: the context run gets ends with SIGINT or SIGTERM, which the command answers (a server shuts down,
	// an acquisition or export stops and says what it left). Otherwise a signal ends the process at once.
	signals bool
}

// runOptions is how every command runs: it parses args into o, validates them, and runs what Validate made of
// them. run writes the command's output itself (its closure holds stdout).
func runOptions[C any](c cli, o options[C], args []string, stderr io.Writer, run func(context.Context, C) error) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.AddFlags(fs)
	if c.usage != "" { // else the flag package's "Usage of NAME:" and the flags
		fs.Usage = func() {
			fmt.Fprint(fs.Output(), c.usage)
			if !c.usageOnly {
				fs.PrintDefaults()
			}
		}
	}
	parse := parseFlags
	if p, ok := any(o).(argsParser); ok {
		parse = p.ParseArgs
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := o.Validate()
	if err != nil {
		return err
	}
	ctx := context.Background()
	if c.signals {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	return run(ctx, cfg)
}

// parseInterleaved parses flags and positional arguments in any order (POD names before or after the flags, as
// kubectl takes them); "--" ends the flags. Unset flags are then read from WARREN_* variables. aliases are pairs of
// flags that set the same variable (-n and --namespace): when one is given, the other counts as given too, so that
// no WARREN_* variable overrides it.
func parseInterleaved(fs *flag.FlagSet, args []string, aliases ...string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > 0 && len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for i := 0; i+1 < len(aliases); i += 2 {
		a, b := aliases[i], aliases[i+1]
		switch {
		case given[a] && !given[b]:
			fs.Set(b, fs.Lookup(a).Value.String())
		case given[b] && !given[a]:
			fs.Set(a, fs.Lookup(b).Value.String())
		}
	}
	if err := applyEnv(fs, envPrefix); err != nil {
		return nil, err
	}
	return positional, nil
}

// flagGiven reports whether the flag was set, on the command line or from its WARREN_ variable.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// toolVariables are WARREN_* variables of the project's scripts and tests, not flags.
var toolVariables = map[string]bool{"WARREN_CACHE": true, "WARREN_KUBE_BIN": true, "WARREN_HELM": true,
	"WARREN_DEMO_PORT": true, "WARREN_PREFIX": true, "WARREN_SERVICE_USER": true}

// applyEnv sets every flag not given on the command line from the environment variable prefix+NAME, NAME being
// the flag's name upper-cased with dashes as underscores (--token-file: WARREN_TOKEN_FILE).
func applyEnv(fs *flag.FlagSet, prefix string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	// A misspelt variable must not silently leave a setting (a policy, a pin) out: say so.
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		flagName, ok := strings.CutPrefix(name, prefix)
		if !ok || toolVariables[name] {
			continue
		}
		if fs.Lookup(strings.ToLower(strings.ReplaceAll(flagName, "_", "-"))) == nil {
			fmt.Fprintf(os.Stderr, "warren: ignoring %s: %s has no flag --%s\n", name, fs.Name(), strings.ToLower(strings.ReplaceAll(flagName, "_", "-")))
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		name := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment variable %s: invalid value %q: %v", name, v, e)
			}
		}
	})
	return err
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
