// Command hessmon trains neural networks while watching the curvature of
// their loss landscape, and inspects what it recorded.
//
// Run `hessmon help` for the list of subcommands and `hessmon CMD --help`
// for each one's flags and an example.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// command is one subcommand. run returns errUsage-wrapped errors for bad
// flags so main can exit 2.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what a subcommand may touch: its output streams. Passing them in
// keeps the commands testable without global state.
type env struct {
	stdout, stderr io.Writer
}

// errUsage marks a bad invocation (exit status 2).
var errUsage = errors.New("usage")

func commands() []command {
	return []command{
		{"train", "train a model with the curvature monitor attached (the main job)", runTrain},
		{"analyze", "one-shot PyHessian-style analysis: top-k eigenvalues, trace, ESD", runAnalyze},
		{"gradcheck", "check exact gradients and HVPs of every model family against finite differences", runGradcheck},
		{"bench", "measure costs: bench hvp | warm | overhead | probe | store | scale", runBench},
		{"runs", "list the runs in a store", runRuns},
		{"show", "show a run's snapshots, or one snapshot in full", runShow},
		{"export", "export a run's snapshots as CSV, JSON or JSON lines", runExport},
		{"plot", "plot eigenvalues, trace, ESD or block traces to PNG", runPlot},
		{"serve", "serve a finished store read-only over HTTP (JSON API and /metrics)", runServe},
		{"compact", "rewrite a finished store without its free pages", runCompact},
		{"dashboards", "write the Grafana dashboard JSON files", runDashboards},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "hessmon watches the Hessian of your training loss: top eigenvalues, trace and spectral density.")
	fmt.Fprintln(w, "\nUsage: hessmon <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'hessmon <command> --help' for a command's flags and an example.")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, &env{stdout: stdout, stderr: stderr}, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "hessmon %s: %v\n", c.name, strings.TrimPrefix(err.Error(), "usage: "))
			return 2
		default:
			fmt.Fprintf(stderr, "hessmon %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "hessmon: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

// newFlags makes a FlagSet whose --help prints a description and an example.
func newFlags(e *env, name, desc, example string) *flag.FlagSet {
	fs := flag.NewFlagSet("hessmon "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "hessmon %s: %s\n\nFlags:\n", name, desc)
		fs.PrintDefaults()
		fmt.Fprintf(w, "\nExample:\n  %s\n", example)
	}
	return fs
}

// parse parses flags, turning errors into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
