package pglocal

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// MinMajor is the oldest PostgreSQL major version pglocal runs.
const MinMajor = 15

// ErrNoBinaries is returned (wrapped) by Start when no folder holds PostgreSQL MinMajor+
// binaries.
var ErrNoBinaries = errors.New("no PostgreSQL binaries found")

// ErrUnreachable: memmie runs as root, so PostgreSQL runs as the postgres user, and a folder
// above the data or socket folder is not searchable by that user.
var ErrUnreachable = errors.New("folder out of the postgres user's reach")

// binaries are the programs of one PostgreSQL installation.
type binaries struct {
	initdb, postgres string
	major            int
}

// DefaultBinDirs returns the folders searched for the binaries when Config.BinDirs is empty:
// pg_config --bindir, then /usr/lib/postgresql/*/bin (Debian, newest first), then Homebrew's
// postgresql@* folders (newest first).
func DefaultBinDirs() []string {
	var dirs []string
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(pgConfig, "--bindir").Output(); err == nil {
			dirs = append(dirs, strings.TrimSpace(string(out)))
		}
	}
	for _, pattern := range []string{
		"/usr/lib/postgresql/*/bin",
		"/opt/homebrew/opt/postgresql@*/bin",
		"/usr/local/opt/postgresql@*/bin",
	} {
		matches, _ := filepath.Glob(pattern)
		slices.SortFunc(matches, func(a, b string) int { return versionIn(b) - versionIn(a) })
		dirs = append(dirs, matches...)
	}
	return dirs
}

// versionIn is the first number in a folder path like /usr/lib/postgresql/15/bin, or 0.
func versionIn(path string) int {
	m := regexp.MustCompile(`(\d+)`).FindString(path)
	n, _ := strconv.Atoi(m)
	return n
}

// findBinaries returns the first folder of dirs with initdb and postgres of MinMajor or newer.
func findBinaries(dirs []string) (binaries, error) {
	var seen []string
	for _, dir := range dirs {
		if dir == "" || slices.Contains(seen, dir) {
			continue
		}
		seen = append(seen, dir)
		b := binaries{initdb: filepath.Join(dir, "initdb"), postgres: filepath.Join(dir, "postgres")}
		if !executable(b.initdb) || !executable(b.postgres) {
			continue
		}
		out, err := exec.Command(b.postgres, "--version").Output()
		if err != nil {
			continue
		}
		// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
		m := regexp.MustCompile(`\(PostgreSQL\) (\d+)`).FindSubmatch(out)
		if m == nil {
			continue
		}
		b.major, _ = strconv.Atoi(string(m[1]))
		if b.major < MinMajor {
			continue
		}
		return b, nil
	}
	where := "nowhere (no folder to search)"
	if len(seen) > 0 {
		where = strings.Join(seen, ", ")
	}
	return binaries{}, fmt.Errorf("%w: no initdb and postgres of version %d or newer in %s; "+
		"install PostgreSQL %d+ (Debian: apt-get install postgresql; macOS: brew install postgresql@17), "+
		"or use a server of your own with --database-url (tests: set MEMMIE_TEST_DATABASE_URL)",
		ErrNoBinaries, MinMajor, where, MinMajor)
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
