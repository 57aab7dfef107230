// Package pglocal runs a PostgreSQL cluster of its own from the machine's binaries (initdb and
// postgres, found with pg_config or in the usual Debian and Homebrew folders), for `memmie dev`
// and for tests, so that neither needs a database set up by hand.
//
//	srv, err := pglocal.Start(ctx, pglocal.Config{DataDir: filepath.Join(dataDir, "postgres")})
//	if err != nil { ... }
//	defer srv.Stop(context.Background())
//	pool, err := pgxpool.New(ctx, srv.URL())
//
// A data folder without a cluster gets one (initdb); one with a cluster is started again, also
// after the server was killed (a stale postmaster.pid or socket lock whose process is gone does
// not block it). The server listens on a Unix socket in the data folder (or on a loopback
// port), so two clusters never collide, and it dies with the process that started it on Linux
// (internal/childproc). initdb and postgres refuse to run as root: as root they run as the
// postgres OS user, who must own the data folder (Start gives it a new one) and be able to
// reach it.
//
// It must never touch a cluster it did not start except through its data folder, nor remove
// a lock file that a running postgres holds.
package pglocal
