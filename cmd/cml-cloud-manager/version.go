package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at build time by the Makefile:
//
//	-ldflags "-X main.version=$(git describe --tags --always --dirty) -X main.commit=$(git rev-parse HEAD)"
var (
	version = "dev"
	commit  = "unknown"
)

// buildVersion returns the version, falling back to the module version when
// the binary was built with "go install module@version" and no -ldflags.
func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

func runVersion(_ context.Context, cli *CLI, args []string) error {
	fs := cli.flagSet("version", "", "Print the version, the commit and the Go version.")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("version takes no arguments")
	}
	_, err := fmt.Fprintf(cli.Stdout, "cml-cloud-manager %s (commit %s, %s %s/%s)\n",
		buildVersion(), commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}
