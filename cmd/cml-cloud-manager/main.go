// Command cml-cloud-manager runs CML Cloud Manager: one binary whose
// subcommands serve the API and background roles, migrate the database and
// print the version. See "cml-cloud-manager help".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, restore the default behaviour so a second one
	// ends the process at once instead of waiting for a graceful shutdown.
	go func() { <-ctx.Done(); stop() }()
	cli := &CLI{
		Stdout:           os.Stdout,
		Stderr:           os.Stderr,
		LookupEnv:        os.LookupEnv,
		DotEnvFile:       ".env",
		SetDefaultLogger: true,
	}
	code := cli.Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// command is one subcommand. To add one, write its run function (which
// parses its own flags with cli.flagSet) and add an entry to commands.
type command struct {
	summary string
	run     func(ctx context.Context, cli *CLI, args []string) error
}

// commands is the subcommand table. It is filled in init because "help"
// refers back to it.
var commands map[string]command

func init() {
	commands = map[string]command{
		"serve":       {"Run the service (HTTP API and background roles) until SIGINT/SIGTERM.", runServe},
		"migrate":     {"Create the database if missing and apply every migration, then exit.", runMigrate},
		"projections": {"List the read models, or rebuild one from the event log (projections rebuild NAME).", runProjections},
		"simulator":   {"Run the built-in cloud simulator (EC2, CloudWatch, CML controllers) alone.", runSimulator},
		"version":     {"Print the version, the commit and the Go version.", runVersion},
		"help":        {"Show this help, or a command's flags with \"help <command>\".", runHelp},
	}
}

// CLI is what every subcommand gets: its output streams and where its
// configuration comes from. Tests build one with buffers and a map lookup.
type CLI struct {
	Stdout io.Writer
	// Stderr receives usage, errors and the log.
	Stderr io.Writer
	// LookupEnv reads the process environment (os.LookupEnv).
	LookupEnv func(string) (string, bool)
	// DotEnvFile is read for variables the environment does not set; ""
	// disables it. See EnvLookup.
	DotEnvFile string
	// SetDefaultLogger makes the configured logger slog's default, so
	// libraries that log through slog or log use it too.
	SetDefaultLogger bool
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError is a command line the program cannot run; it exits 2.
type usageError struct {
	msg     string
	printed bool // the flag package has already printed the message and usage
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// Run runs the command named by args[0] and returns the process exit code.
func (cli *CLI) Run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		cli.usage(cli.Stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	if name == "-h" || name == "-help" || name == "--help" {
		name = "help"
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(cli.Stderr, "cml-cloud-manager: unknown command %q\n\n", name)
		cli.usage(cli.Stderr)
		return exitUsage
	}
	err := cmd.run(ctx, cli, rest)
	var uerr *usageError
	var cerr *ConfigError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &uerr):
		if !uerr.printed {
			fmt.Fprintf(cli.Stderr, "cml-cloud-manager %s: %s\nRun \"cml-cloud-manager help %s\" for usage.\n", name, uerr.msg, name)
		}
		return exitUsage
	case errors.As(err, &cerr):
		fmt.Fprintf(cli.Stderr, "cml-cloud-manager %s: %v\nSee .env.example for every variable and its default.\n", name, cerr)
		return exitError
	default:
		fmt.Fprintf(cli.Stderr, "cml-cloud-manager %s: %v\n", name, err)
		return exitError
	}
}

func (cli *CLI) usage(w io.Writer) {
	fmt.Fprint(w, "Usage: cml-cloud-manager <command> [flags]\n\nCommands:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, name := range slices.Sorted(maps.Keys(commands)) {
		fmt.Fprintf(tw, "  %s\t%s\n", name, commands[name].summary)
	}
	tw.Flush()
	fmt.Fprint(w, "\nConfiguration comes from environment variables (and ./.env outside production);\n"+
		".env.example lists every variable with its default.\n")
}

// flagSet returns a flag set for a subcommand whose usage shows argsUsage
// and description, and whose parse errors exit 2.
func (cli *CLI) flagSet(name, argsUsage, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(cli.Stderr)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: cml-cloud-manager %s", name)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprint(out, " [flags]")
		}
		if argsUsage != "" {
			fmt.Fprint(out, " "+argsUsage)
		}
		fmt.Fprintf(out, "\n\n%s\n", description)
		if hasFlags {
			fmt.Fprint(out, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args into fs, marking errors the flag package already
// reported so Run does not print them twice.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &usageError{msg: err.Error(), printed: true}
}

func runHelp(ctx context.Context, cli *CLI, args []string) error {
	switch len(args) {
	case 0:
		cli.usage(cli.Stdout)
		return nil
	case 1:
		if args[0] == "help" {
			cli.usage(cli.Stdout)
			return nil
		}
		cmd, ok := commands[args[0]]
		if !ok {
			return usageErrorf("unknown command %q", args[0])
		}
		// Asked-for help goes to stdout.
		helpCLI := *cli
		helpCLI.Stderr = cli.Stdout
		return cmd.run(ctx, &helpCLI, []string{"-h"})
	default:
		return usageErrorf("help takes at most one command name, got %s", strings.Join(args, " "))
	}
}

// setup reads the configuration (every problem at once) and builds the
// logger. Commands that need configuration call it after parsing flags.
func (cli *CLI) setup() (Config, *slog.Logger, error) {
	lookup, loaded, err := EnvLookup(cli.DotEnvFile, cli.LookupEnv)
	if err != nil {
		return Config{}, nil, err
	}
	cfg, err := LoadValidConfig(lookup)
	if err != nil {
		return Config{}, nil, err
	}
	logger, err := newLogger(cli.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return Config{}, nil, err
	}
	if cli.SetDefaultLogger {
		slog.SetDefault(logger)
	}
	if loaded {
		logger.Info("read variables not set in the environment from a dotenv file", slog.String("path", cli.DotEnvFile))
	}
	return cfg, logger, nil
}
