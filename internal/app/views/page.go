package views

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// listQuery builds the SQL of a list: its conditions, and the arguments they number.
type listQuery struct {
	where []string
	args  []any
}

// arg adds v to the arguments and returns its placeholder.
func (q *listQuery) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

// sql is selectFrom with the conditions, ordered by orderBy, limited to one row more than
// limit: that row tells whether there is a next page.
func (q *listQuery) sql(selectFrom, orderBy string, limit int) string {
	sql := selectFrom
	if len(q.where) > 0 {
		sql += " WHERE " + strings.Join(q.where, " AND ")
	}
	return sql + " ORDER BY " + orderBy + " LIMIT " + q.arg(limit+1)
}

// readPage runs q's SQL (from sql, so one row more than limit), scans each row with scan, and
// keeps limit of them, with the cursor of the last one kept when more followed. what names
// the list in errors.
func readPage[T any](ctx context.Context, v *Views, what, sql string, q *listQuery, limit int,
	scan func(pgx.Rows) (T, error), cursor func(T) string) ([]T, string, error) {
	rows, err := v.pool.Query(ctx, sql, q.args...)
	if err != nil {
		return nil, "", fmt.Errorf("list %s: %w", what, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		t, err := scan(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list %s: %w", what, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list %s: %w", what, err)
	}
	if len(out) <= limit {
		return out, "", nil
	}
	out = out[:limit]
	return out, cursor(out[limit-1]), nil
}

// A time cursor is the last row's sort key, "<time in Unix microseconds>.<id>", in base64url:
// opaque to clients, and exact, since Postgres keeps microseconds.
func encodeTimeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "." + id))
}

// decodeTimeCursor reads a cursor of encodeTimeCursor, its id with parseID; ErrCursor when s
// is not one.
func decodeTimeCursor[ID any](s string, parseID func(string) (ID, error)) (time.Time, ID, error) {
	var zero ID
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return time.Time{}, zero, fmt.Errorf("%w %q: not one a page gave", ErrCursor, s)
	}
	micros, rawID, ok := strings.Cut(string(b), ".")
	n, nerr := strconv.ParseInt(micros, 10, 64)
	id, ierr := parseID(rawID)
	if !ok || nerr != nil || ierr != nil {
		return time.Time{}, zero, fmt.Errorf("%w %q: not one a page gave", ErrCursor, s)
	}
	return time.UnixMicro(n).UTC(), id, nil
}
