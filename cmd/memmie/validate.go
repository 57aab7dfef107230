package main

import (
	"errors"
	"fmt"

	"github.com/memmie/memmie/definitions"
	"github.com/spf13/cobra"
)

func newValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate PATH...",
		Short: "Check definition files offline",
		Long: `Checks schemas, workflows and providers offline, with no NATS and no Postgres.
Every .yaml, .yml and .json file below each PATH is read, except under testdata/ and
dot-directories, and the files are validated as one set. Prints one line per problem as
file:line: field: message. Exits 0 when all are valid, 1 otherwise.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			_, err := definitions.Load(paths...)
			var probs definitions.Problems
			switch {
			case err == nil:
				return nil
			case errors.As(err, &probs):
				for _, p := range probs {
					fmt.Fprintln(cmd.OutOrStdout(), p.String())
				}
				return &exitError{code: 1}
			default:
				return err
			}
		},
	}
}
