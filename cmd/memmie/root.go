package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix is the prefix of the environment variables every flag falls back to:
// --nats-url reads MEMMIE_NATS_URL when the flag is not given.
const envPrefix = "MEMMIE_"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "memmie",
		Short: "An event-sourced workflow engine on NATS JetStream",
		Long: `memmie turns blob events into versioned changes of those blobs (deltas) by running
declarative workflows. Every flag falls back to an environment variable MEMMIE_<FLAG>,
e.g. --nats-url reads MEMMIE_NATS_URL.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd, os.LookupEnv)
		},
	}
	root.AddCommand(newValidateCmd())
	root.AddCommand(newApplyCmd())
	root.AddCommand(newRunCmd())
	root.AddCommand(newExecutionsCmd())
	root.AddCommand(newDeadLetterCmd())
	root.AddCommand(newBlobsCmd())
	root.AddCommand(newDeltasCmd())
	root.AddCommand(newDevCmd())
	root.AddCommand(newServeCmd())
	root.AddCommand(newStreamsCmd())
	root.AddCommand(newMigrateCmd())
	root.AddCommand(newProjectionsCmd())
	root.AddCommand(newBenchCmd())
	annotateEnv(root)
	return root
}

// envName returns the environment variable a flag falls back to.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag of cmd (local and inherited) that was not given on the command line
// from its MEMMIE_* environment variable, when that is set.
func applyEnv(cmd *cobra.Command, lookup func(string) (string, bool)) error {
	var errs []string
	set := func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		v, ok := lookup(envName(f.Name))
		if !ok {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: %v", envName(f.Name), v, err))
			return
		}
		f.Changed = true
		if f.Annotations == nil {
			f.Annotations = map[string][]string{}
		}
		f.Annotations[fromEnvAnnotation] = []string{envName(f.Name)}
	}
	cmd.Flags().VisitAll(set)
	cmd.InheritedFlags().VisitAll(set)
	if len(errs) > 0 {
		return fmt.Errorf("environment: %s", strings.Join(errs, "; "))
	}
	return nil
}

// fromEnvAnnotation marks a flag that applyEnv set from the environment.
const fromEnvAnnotation = "memmie/from-env"

// fromCommandLine reports whether the flag was given on the command line, not through its
// environment variable.
func fromCommandLine(f *pflag.Flag) bool {
	return f != nil && f.Changed && f.Annotations[fromEnvAnnotation] == nil
}

// annotateEnv appends "(env MEMMIE_X)" to the usage of every flag of the command tree, so that
// --help documents the fallback.
func annotateEnv(cmd *cobra.Command) {
	add := func(f *pflag.Flag) {
		if f.Name == "help" || strings.Contains(f.Usage, envPrefix) {
			return
		}
		f.Usage += " (env " + envName(f.Name) + ")"
	}
	cmd.Flags().VisitAll(add)
	cmd.PersistentFlags().VisitAll(add)
	for _, c := range cmd.Commands() {
		annotateEnv(c)
	}
}
