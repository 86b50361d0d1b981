package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/auth"
)

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

// TokenIssueOptions are the flags of `warren token issue`; Validate turns them into auth.IssueOptions and the key
// to sign with, or the rules to print.
type TokenIssueOptions struct {
	issue                                     auth.IssueOptions // flags bound to its fields where the types match
	key, preset, collectorNamespace           string
	clusters, rules, groups, presetNamespaces stringList
	printRules                                bool
}

// tokenIssue is a `warren token issue`: the token to sign with keyFile, or (printRules) only its rules to print.
type tokenIssue struct {
	keyFile string
	opts    auth.IssueOptions
	// rules are the --rule flags and the preset's, as given; presetRules say what each of the preset's is for.
	rules       []string
	presetRules []acquire.PresetRule
	preset      string
	printRules  bool
}

// NewTokenIssueOptions returns the options with the libraries' defaults.
func NewTokenIssueOptions() *TokenIssueOptions {
	return &TokenIssueOptions{issue: auth.DefaultIssueOptions(), collectorNamespace: acquire.DefaultConfig().CollectorNamespace}
}

// AddFlags binds the options to fs.
func (o *TokenIssueOptions) AddFlags(fs *flag.FlagSet) {
	in := &o.issue
	fs.StringVar(&o.key, "key", "", "signing key (signing.key from warren keygen)")
	fs.StringVar(&in.Subject, "subject", "", "who the token is for (sub claim), shown in audit logs")
	fs.Var(&o.groups, "group", "a group of the caller, passed to Kubernetes by connectors that impersonate; repeat or comma-separate")
	fs.Var(&o.clusters, "cluster", "the cluster the token may reach; several (repeat or comma-separate) need --multi-cluster")
	fs.BoolVar(&in.MultiCluster, "multi-cluster", in.MultiCluster, "allow several --cluster: the token then works at each of them (and a leak reaches them all); gateways accept it only with --allow-multi-cluster-tokens")
	fs.Var(&o.rules, "rule", "what the token may do, VERBS:RESOURCES[:NAMESPACES[:NAMES]]; repeat for several")
	fs.DurationVar(&in.TTL, "ttl", in.TTL, "token lifetime")
	fs.StringVar(&in.Issuer, "issuer", in.Issuer, "issuer (iss claim)")
	fs.StringVar(&o.preset, "preset", "", "add the rules a job needs: acquire (warren acquire in --namespace), acquire-ephemeral and acquire-node "+
		"(and its ephemeral or node mode); comma-separate to combine")
	fs.StringVar(&o.collectorNamespace, "collector-namespace", o.collectorNamespace, "with --preset acquire-node: the namespace of the collector pods")
	fs.Var(&o.presetNamespaces, "namespace", "namespace(s) of --preset, repeat or comma-separate; * for every namespace")
	fs.BoolVar(&o.printRules, "print-rules", false, "print the rules (with --preset: and what each is for) instead of issuing a token; no --key needed")
}

// Validate checks the flags together and returns the token to issue (or the rules to print). It reads no key.
func (o *TokenIssueOptions) Validate() (tokenIssue, error) {
	const example = "e.g. warren token issue --key signing.key --subject alice --cluster prod --rule get,list:pods"
	r := tokenIssue{keyFile: o.key, rules: append([]string(nil), o.rules...), preset: o.preset, printRules: o.printRules}
	switch o.preset {
	case "":
		if len(o.presetNamespaces) > 0 {
			return r, usageErr("token issue: --namespace goes with --preset, e.g. --preset acquire --namespace payments")
		}
	default:
		var nss []string
		for _, n := range o.presetNamespaces {
			nss = append(nss, splitList(n)...)
		}
		var err error
		if r.presetRules, err = acquire.PresetRules(splitList(o.preset), nss, o.collectorNamespace); err != nil {
			return r, usageErr("token issue: --preset %s: %v", o.preset, err)
		}
		for _, p := range r.presetRules {
			r.rules = append(r.rules, p.Rule)
		}
	}
	if r.printRules {
		if len(r.rules) == 0 {
			return r, usageErr("token issue: --print-rules needs --rule or --preset")
		}
		for _, s := range r.rules {
			if _, err := auth.ParseRule(s); err != nil {
				return r, fmt.Errorf("token issue: %w", err)
			}
		}
		return r, nil
	}
	opts := o.issue
	switch {
	case o.key == "":
		return r, fmt.Errorf("token issue: missing --key: the signing key file; %s", example)
	case opts.Subject == "":
		return r, fmt.Errorf("token issue: missing --subject: who the token is for; %s", example)
	case len(o.clusters) == 0:
		return r, fmt.Errorf("token issue: missing --cluster: the cluster the token may reach; %s", example)
	case len(r.rules) == 0:
		return r, fmt.Errorf("token issue: missing --rule (or --preset): what the token may do; %s", example)
	case opts.TTL <= 0:
		return r, fmt.Errorf("token issue: --ttl must be positive, e.g. --ttl 15m")
	}
	for _, g := range o.groups {
		opts.Groups = append(opts.Groups, splitList(g)...)
	}
	// --cluster takes comma lists as well as repeats; --rule cannot, rules contain commas.
	for _, c := range o.clusters {
		opts.Clusters = append(opts.Clusters, splitList(c)...)
	}
	if len(opts.Clusters) > 1 && !opts.MultiCluster {
		return r, fmt.Errorf("token issue: %d clusters given (%s): a token for several clusters works at each of them, so one leak reaches them all; issue one token per cluster, or pass --multi-cluster to mean it (gateways accept such tokens only with --allow-multi-cluster-tokens)",
			len(opts.Clusters), strings.Join(opts.Clusters, ", "))
	}
	for _, s := range r.rules {
		rule, err := auth.ParseRule(s)
		if err != nil {
			return r, fmt.Errorf("token issue: %w", err)
		}
		opts.Rules = append(opts.Rules, rule)
	}
	r.opts = opts
	return r, nil
}

// runTokenIssue implements `warren token issue`: prints the rules (--print-rules) or the caller token.
func runTokenIssue(args []string, stdout, stderr io.Writer) error {
	c := cli{name: "warren token issue", usage: tokenUsage + "\nflags of warren token issue:\n"}
	return runOptions(c, NewTokenIssueOptions(), args, stderr, func(_ context.Context, r tokenIssue) error {
		if r.printRules {
			printRuleList(stdout, r.rules, r.presetRules)
			return nil
		}
		sk, err := auth.LoadSigningKey(r.keyFile)
		if err != nil {
			return fmt.Errorf("token issue: %w", err)
		}
		tok, err := sk.IssueCaller(r.opts)
		if err != nil {
			return fmt.Errorf("token issue: %w", err)
		}
		if len(r.presetRules) > 0 {
			fmt.Fprintf(stderr, "token issued with the rules of --preset %s:\n", r.preset)
			printRuleList(stderr, r.rules, r.presetRules)
		}
		fmt.Fprintln(stdout, tok)
		return nil
	})
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

// TokenConnectorOptions are the flags of `warren token connector`; Validate returns the join token to issue.
type TokenConnectorOptions struct{ join tokenConnector }

// tokenConnector is a `warren token connector`: the join token of cluster's connector, signed with keyFile.
type tokenConnector struct {
	keyFile, cluster string
	ttl              time.Duration
}

// NewTokenConnectorOptions returns the options with the library's defaults.
func NewTokenConnectorOptions() *TokenConnectorOptions {
	return &TokenConnectorOptions{join: tokenConnector{ttl: auth.MaxConnectorTokenLifetime}}
}

// AddFlags binds the options to fs.
func (o *TokenConnectorOptions) AddFlags(fs *flag.FlagSet) {
	j := &o.join
	fs.StringVar(&j.keyFile, "key", "", "signing key (signing.key from warren keygen)")
	fs.StringVar(&j.cluster, "cluster", "", "the cluster whose connector uses the token")
	fs.DurationVar(&j.ttl, "ttl", j.ttl, "token lifetime (at most the gateway's --max-connector-token-lifetime)")
}

// Validate checks the flags together. It reads no key.
func (o *TokenConnectorOptions) Validate() (tokenConnector, error) {
	const example = "e.g. warren token connector --key signing.key --cluster prod"
	j := o.join
	switch {
	case j.keyFile == "":
		return j, fmt.Errorf("token connector: missing --key: the signing key file; %s", example)
	case j.cluster == "":
		return j, fmt.Errorf("token connector: missing --cluster: the connector's cluster; %s", example)
	case j.ttl <= 0:
		return j, fmt.Errorf("token connector: --ttl must be positive, e.g. --ttl 8760h")
	}
	return j, nil
}

// runTokenConnector implements `warren token connector`: prints the join token of a cluster's connector.
func runTokenConnector(args []string, stdout, stderr io.Writer) error {
	c := cli{name: "warren token connector", usage: tokenUsage + "\nflags of warren token connector:\n"}
	return runOptions(c, NewTokenConnectorOptions(), args, stderr, func(_ context.Context, j tokenConnector) error {
		sk, err := auth.LoadSigningKey(j.keyFile)
		if err != nil {
			return fmt.Errorf("token connector: %w", err)
		}
		tok, err := sk.IssueConnector(j.cluster, j.ttl, time.Now())
		if err != nil {
			return fmt.Errorf("token connector: %w", err)
		}
		fmt.Fprintln(stdout, tok)
		return nil
	})
}
