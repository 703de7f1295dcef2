// Package vmcommand is `containerd-shim-coco-v2 vm-command`: it prints what
// the runtime would launch for a pod of a runtime class — the QEMU argv, one
// argument per line, or the Cloud Hypervisor vm.create body — without
// launching anything. Users debug their configuration with it; tests pin it.
package vmcommand

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/sandbox/vmplan"
	"github.com/coco-runtime/coco/shim/pod"
)

// Exit codes of Main.
const (
	ExitOK       = 0
	ExitFailed   = 1 // the configuration or init-data is invalid
	ExitBadUsage = 2
)

// DefaultID stands in for the sandbox id, which containerd chooses.
const DefaultID = "POD_ID"

// Main runs the subcommand. args are the words after "vm-command" (a
// leading "vm-command" is tolerated). The launch goes to stdout; notes
// (what the configuration cannot bind, assets missing on this host) go to
// stderr prefixed "note: ", so stdout stays exactly the command.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "vm-command" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("vm-command", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration `file` (default: $"+configs.EnvConfig+", else the embedded "+configs.DefaultName+")")
	class := fs.String("class", "", "use a shipped runtime `class` instead (e.g. qemu-snp)")
	initFile := fs.String("initdata", "", "init-data TOML `file` (raw, or base64 of gzip as in the pod annotation) to bind and attach; default: the class's runtime.initdata")
	id := fs.String("id", DefaultID, "sandbox `id` to show in paths")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: containerd-shim-coco-v2 vm-command [--config FILE | --class NAME] [--initdata FILE] [--id ID]\n\n"+
			"Prints the VMM command line (QEMU: one argument per line; Cloud Hypervisor: the vm.create JSON)\n"+
			"a pod of this runtime class would start, without starting it. Notes go to stderr.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitBadUsage
	}
	if fs.NArg() > 0 || (*config != "" && *class != "") {
		fs.Usage()
		return ExitBadUsage
	}
	lines, notes, err := run(*config, *class, *initFile, *id)
	if err != nil {
		fmt.Fprintln(stderr, "vm-command:", err)
		return ExitFailed
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	for _, n := range notes {
		fmt.Fprintln(stderr, "note: "+n)
	}
	return ExitOK
}

func run(configPath, class, initFile, id string) ([]string, []string, error) {
	c, err := configs.LoadClassOrFile(class, configPath)
	if err != nil {
		return nil, nil, err
	}
	plan, err := vmplan.New(c, Pod(id, initFile))
	if err != nil {
		return nil, nil, err
	}
	lines, notes, err := plan.Command()
	return lines, append(plan.Notes(), notes...), err
}

// Pod is the pod the tools show: the shim's own layout under $COCO_RUN_DIR
// (default /run/coco), with init-data from file when set, else the class's.
func Pod(id, initFile string) vmplan.Pod {
	return vmplan.Pod{ID: id, Dir: pod.StateDir(pod.RunDir(os.Getenv), id), InitDataFile: initFile}
}
