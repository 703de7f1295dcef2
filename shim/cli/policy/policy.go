// Package policy is the `containerd-shim-coco-v2 policy` subcommand:
// generate an agent policy that pins a pod from its YAML, check a recorded
// request against a policy offline, and print the policy input format.
//
// It links no Rego engine: OPA's package initialisation would cost every
// per-pod shim process time and heap. `policy check` runs the guest's own
// engine process, coco-policy, through the agent's protocol.
package policy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const usageText = `Usage: containerd-shim-coco-v2 policy generate -f POD.yaml [options]
       containerd-shim-coco-v2 policy check --policy POLICY --request REQUEST.json
       containerd-shim-coco-v2 policy input-schema

generate  reads Pods, Deployments, ReplicaSets, StatefulSets, DaemonSets,
          Jobs and CronJobs (several documents per file; ConfigMaps and
          Secrets alongside for env), and writes for each an agent policy
          that pins its sandbox and containers, inside init-data with
          aa.toml/cdh.toml; prints the pod annotation, or with --inject
          writes it into the YAML.
check     evaluates one agent request against a policy (.rego or
          init-data TOML) with the guest's engine (coco-policy) and prints
          the decision and, for a denial, the policy's reasons.
input-schema  prints the input each policy rule receives.
`

// Exit codes: 0 success (check: allowed), 1 failure (check: denied), 2 bad
// usage.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// Main runs the subcommand with args (after "policy").
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	switch args[0] {
	case "generate":
		return generateMain(ctx, args[1:], stdout, stderr)
	case "check":
		return checkMain(ctx, args[1:], stdout, stderr)
	case "input-schema":
		return schemaMain(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	fmt.Fprintf(stderr, "policy: unknown subcommand %q\n\n%s", args[0], usageText)
	return exitUsage
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func newFlagSet(name string, stderr io.Writer, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse returns an exit code when parsing ends the command.
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, true
		}
		return exitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		return exitUsage, true
	}
	return 0, false
}

func readFileOrStdin(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 16<<20))
	}
	return os.ReadFile(path)
}
