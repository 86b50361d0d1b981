package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/auth"
)

// envPrefix is the prefix of the environment variables applyEnv reads (WARREN_TOKEN_FILE for --token-file).
const envPrefix = "WARREN_"

const tokenUsage = `usage:
  warren token issue --key KEY --subject S --cluster C [--cluster C2 ... --multi-cluster] --rule RULE [--rule ...] [--ttl 15m] [--issuer warren]
      prints a caller token (audience "warren") for one cluster; several need --multi-cluster, and a gateway
      started with --allow-multi-cluster-tokens
  warren token issue --preset acquire --namespace N [--namespace N2 ...] [--print-rules | --key KEY --subject S --cluster C ...]
      the rules warren acquire needs in namespaces N (with --print-rules: only print them, with what each is for);
      --preset acquire-ephemeral and acquire-node [--collector-namespace C] add the ephemeral and node modes' rules
  warren token connector --key KEY --cluster C [--ttl 8760h]
      prints a connector's join token (audience "warren-connector", bound to cluster C): the connector exchanges it
      at the gateway for short-lived credentials bound to a key of its own, and renews them with it

RULE is VERBS:RESOURCES[:NAMESPACES[:NAMES]], each a comma list; a resource may carry its API group as
resource.group and a subresource as pods/exec; '*' is any. e.g. --rule get,list:pods --rule create:pods/exec:payments
`

// runToken implements `warren token issue` and `warren token connector`.
func runToken(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("token: missing subcommand: issue or connector, e.g. warren token issue --key signing.key --subject alice --cluster prod --rule get,list:pods")
	}
	switch args[0] {
	case "issue":
		return runTokenIssue(args[1:], stdout, stderr)
	case "connector":
		return runTokenConnector(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, tokenUsage)
		return flag.ErrHelp
	}
	return fmt.Errorf("token: unknown subcommand %q: want issue or connector", args[0])
}

func runTokenIssue(args []string, stdout, stderr io.Writer) error {
	const example = "e.g. warren token issue --key signing.key --subject alice --cluster prod --rule get,list:pods"
	fs := flag.NewFlagSet("warren token issue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "signing key (signing.key from warren keygen)")
	subject := fs.String("subject", "", "who the token is for (sub claim), shown in audit logs")
	var clusters, rules, groups stringList
	fs.Var(&groups, "group", "a group of the caller, passed to Kubernetes by connectors that impersonate; repeat or comma-separate")
	fs.Var(&clusters, "cluster", "the cluster the token may reach; several (repeat or comma-separate) need --multi-cluster")
	multi := fs.Bool("multi-cluster", false, "allow several --cluster: the token then works at each of them (and a leak reaches them all); gateways accept it only with --allow-multi-cluster-tokens")
	fs.Var(&rules, "rule", "what the token may do, VERBS:RESOURCES[:NAMESPACES[:NAMES]]; repeat for several")
	ttl := fs.Duration("ttl", 15*time.Minute, "token lifetime")
	issuer := fs.String("issuer", auth.DefaultIssuer, "issuer (iss claim)")
	preset := fs.String("preset", "", "add the rules a job needs: acquire (warren acquire in --namespace), acquire-ephemeral and acquire-node "+
		"(and its ephemeral or node mode); comma-separate to combine")
	collectorNS := fs.String("collector-namespace", acquire.DefaultConfig().CollectorNamespace, "with --preset acquire-node: the namespace of the collector pods")
	var presetNS stringList
	fs.Var(&presetNS, "namespace", "namespace(s) of --preset, repeat or comma-separate; * for every namespace")
	printRules := fs.Bool("print-rules", false, "print the rules (with --preset: and what each is for) instead of issuing a token; no --key needed")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), tokenUsage+"\nflags of warren token issue:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var presetRules []acquire.PresetRule
	switch *preset {
	case "":
		if len(presetNS) > 0 {
			return usageErr("token issue: --namespace goes with --preset, e.g. --preset acquire --namespace payments")
		}
	default:
		var nss []string
		for _, n := range presetNS {
			nss = append(nss, splitList(n)...)
		}
		var err error
		if presetRules, err = acquire.PresetRules(splitList(*preset), nss, *collectorNS); err != nil {
			return usageErr("token issue: --preset %s: %v", *preset, err)
		}
		for _, r := range presetRules {
			rules = append(rules, r.Rule)
		}
	}
	if *printRules {
		if len(rules) == 0 {
			return usageErr("token issue: --print-rules needs --rule or --preset")
		}
		for _, r := range rules {
			if _, err := auth.ParseRule(r); err != nil {
				return fmt.Errorf("token issue: %w", err)
			}
		}
		printRuleList(stdout, rules, presetRules)
		return nil
	}
	switch {
	case *key == "":
		return fmt.Errorf("token issue: missing --key: the signing key file; %s", example)
	case *subject == "":
		return fmt.Errorf("token issue: missing --subject: who the token is for; %s", example)
	case len(clusters) == 0:
		return fmt.Errorf("token issue: missing --cluster: the cluster the token may reach; %s", example)
	case len(rules) == 0:
		return fmt.Errorf("token issue: missing --rule (or --preset): what the token may do; %s", example)
	case *ttl <= 0:
		return fmt.Errorf("token issue: --ttl must be positive, e.g. --ttl 15m")
	}
	opts := auth.IssueOptions{Issuer: *issuer, Subject: *subject, TTL: *ttl, MultiCluster: *multi}
	for _, g := range groups {
		opts.Groups = append(opts.Groups, splitList(g)...)
	}
	// --cluster takes comma lists as well as repeats; --rule cannot, rules contain commas.
	for _, c := range clusters {
		for _, name := range strings.Split(c, ",") {
			if name = strings.TrimSpace(name); name != "" {
				opts.Clusters = append(opts.Clusters, name)
			}
		}
	}
	if len(opts.Clusters) > 1 && !*multi {
		return fmt.Errorf("token issue: %d clusters given (%s): a token for several clusters works at each of them, so one leak reaches them all; issue one token per cluster, or pass --multi-cluster to mean it (gateways accept such tokens only with --allow-multi-cluster-tokens)",
			len(opts.Clusters), strings.Join(opts.Clusters, ", "))
	}
	for _, s := range rules {
		r, err := auth.ParseRule(s)
		if err != nil {
			return fmt.Errorf("token issue: %w", err)
		}
		opts.Rules = append(opts.Rules, r)
	}
	sk, err := auth.LoadSigningKey(*key)
	if err != nil {
		return fmt.Errorf("token issue: %w", err)
	}
	tok, err := sk.IssueCaller(opts)
	if err != nil {
		return fmt.Errorf("token issue: %w", err)
	}
	if len(presetRules) > 0 {
		fmt.Fprintf(stderr, "token issued with the rules of --preset %s:\n", *preset)
		printRuleList(stderr, rules, presetRules)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// printRuleList prints one --rule per line, a preset's rule after a comment line saying what it is for.
func printRuleList(w io.Writer, rules []string, preset []acquire.PresetRule) {
	why := map[string]acquire.PresetRule{}
	for _, p := range preset {
		why[p.Rule] = p
	}
	for _, r := range rules {
		if p, ok := why[r]; ok {
			scope := ""
			if p.ClusterScope {
				scope = " (cluster scope; optional: without it, recorded as skipped)"
			}
			fmt.Fprintf(w, "# %s%s\n", p.Why, scope)
		}
		fmt.Fprintf(w, "--rule %s\n", r)
	}
}

func runTokenConnector(args []string, stdout, stderr io.Writer) error {
	const example = "e.g. warren token connector --key signing.key --cluster prod"
	fs := flag.NewFlagSet("warren token connector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "signing key (signing.key from warren keygen)")
	cluster := fs.String("cluster", "", "the cluster whose connector uses the token")
	ttl := fs.Duration("ttl", auth.MaxConnectorTokenLifetime, "token lifetime (at most the gateway's --max-connector-token-lifetime)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), tokenUsage+"\nflags of warren token connector:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *key == "":
		return fmt.Errorf("token connector: missing --key: the signing key file; %s", example)
	case *cluster == "":
		return fmt.Errorf("token connector: missing --cluster: the connector's cluster; %s", example)
	case *ttl <= 0:
		return fmt.Errorf("token connector: --ttl must be positive, e.g. --ttl 8760h")
	}
	sk, err := auth.LoadSigningKey(*key)
	if err != nil {
		return fmt.Errorf("token connector: %w", err)
	}
	tok, err := sk.IssueConnector(*cluster, *ttl, time.Now())
	if err != nil {
		return fmt.Errorf("token connector: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// stringList is a repeatable flag: each use appends one value as given.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, " ") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}
