// Package migrations holds the Postgres schema of memmie's projections as numbered SQL files,
// embedded in the binary, and applies them with goose under a Postgres advisory lock, so that
// processes starting at once (several `memmie serve`, `memmie migrate`) apply each file once.
//
//	db, err := sql.Open("pgx", databaseURL) // github.com/jackc/pgx/v5/stdlib
//	applied, err := migrations.Up(ctx, db)
//
// A new change is a new file (00002_what.sql, with -- +goose Up and -- +goose Down); an applied
// file is never edited. It must never hold data that is not rebuildable from the streams.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS

// VersionTable is the table where goose records the applied migrations.
const VersionTable = "goose_db_version"

// lockID is the advisory lock under which migrations run, memmie's own so that it waits for
// no other application's goose.
const lockID = 0x6d656d6d6965 // "memmie"

// Applied is one migration that Up applied.
type Applied struct {
	Version  int64
	File     string
	Duration time.Duration
}

// Up applies the migrations db has not had yet, in order, and returns them (none when db is
// up to date; on an error, those applied before it). It waits for the advisory lock while another process migrates, up to 10
// minutes, checking every second.
func Up(ctx context.Context, db *sql.DB) ([]Applied, error) {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 600))
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS,
		goose.WithSessionLocker(locker), goose.WithTableName(VersionTable))
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	results, err := p.Up(ctx)
	if partial := (*goose.PartialError)(nil); errors.As(err, &partial) {
		results = partial.Applied
	}
	applied := make([]Applied, 0, len(results))
	for _, r := range results {
		applied = append(applied, Applied{Version: r.Source.Version, File: r.Source.Path, Duration: r.Duration})
	}
	if err != nil {
		return applied, fmt.Errorf("migrate: %w", err)
	}
	return applied, nil
}
