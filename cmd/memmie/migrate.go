package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/spf13/cobra"

	"github.com/memmie/memmie/migrations"
)

func newMigrateCmd() *cobra.Command {
	var databaseURL string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the Postgres migrations of the projections",
		Long: `Applies the migrations (embedded in this binary) that the database has not had yet, in
order, and prints each one applied. Processes migrating at once take turns under a Postgres
advisory lock, so each migration is applied once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return migrate(cmd.Context(), cmd.OutOrStdout(), databaseURL)
		},
	}
	cmd.Flags().StringVar(&databaseURL, "database-url", "", "Postgres database, e.g. postgres://user:pass@host:5432/memmie")
	return cmd
}

func migrate(ctx context.Context, out io.Writer, databaseURL string) error {
	if databaseURL == "" {
		return errors.New("migrate: --database-url (or " + envName("database-url") + ") is required")
	}
	applied, err := migrateDatabase(ctx, out, databaseURL, "--database-url")
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(out, "up to date: no migration to apply")
	}
	return nil
}

// migrateDatabase connects to databaseURL, applies the migrations it has not had yet and
// prints each one applied; what names the database in errors.
func migrateDatabase(ctx context.Context, out io.Writer, databaseURL, what string) ([]migrations.Applied, error) {
	db, err := sql.Open("pgx", databaseURL)
	if err != nil {
		return nil, fmt.Errorf("migrate: %s: %w", what, err)
	}
	defer db.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		return nil, fmt.Errorf("migrate: connect to %s: %w", what, err)
	}
	applied, err := migrations.Up(ctx, db)
	for _, a := range applied {
		fmt.Fprintf(out, "applied %s (%s)\n", filepath.Base(a.File), a.Duration.Round(time.Millisecond))
	}
	return applied, err
}
