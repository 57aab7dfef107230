package views

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// DeadLetterSummary is a row of the dead_letters table without the original message: what a
// list shows.
type DeadLetterSummary struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	Reason string `json:"reason"`
	// Subject is the original subject, where a redrive sends the message.
	Subject string `json:"subject"`
	// Stream and StreamSeq are where the original was stored, when it was.
	Stream    string `json:"stream,omitempty"`
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// Size is the length of the data kept; Truncated says that the original was longer.
	Size       int        `json:"size"`
	Truncated  bool       `json:"truncated"`
	RecordedAt time.Time  `json:"recorded_at"`
	RedrivenAt *time.Time `json:"redriven_at,omitempty"`
}

// DeadLetter is a row of the dead_letters table: a dead letter with its original message.
type DeadLetter struct {
	DeadLetterSummary
	Headers map[string][]string `json:"headers"`
	// Data is the original message's body (base64 in JSON).
	Data []byte `json:"data"`
}

// DeadLetterQuery selects a page of dead letters, newest first (by recorded time, then id).
type DeadLetterQuery struct {
	// Source, when set, keeps only the dead letters of that source.
	Source string
	// Limit bounds the page; it must be positive.
	Limit int
	// Cursor is the Next of the page before; empty for the first page.
	Cursor string
}

// DeadLetterPage is a page of dead letters.
type DeadLetterPage struct {
	DeadLetters []DeadLetterSummary `json:"dead_letters"`
	// Next, when set, is the cursor of the next page: more rows followed this page when it was
	// read. Absent on the last page.
	Next string `json:"next,omitempty"`
}

// ErrDeadLetterNotFound is the error of a dead letter that the table does not hold.
var ErrDeadLetterNotFound = errors.New("no such dead letter")

const deadLetterSummaryColumns = `id, source, reason, subject, coalesce(stream, ''), coalesce(stream_seq, 0),
	coalesce(octet_length(data), 0), truncated, recorded_at, redriven_at`

func scanSummary(row pgx.Row, d *DeadLetterSummary, more ...any) error {
	var seq int64
	if err := row.Scan(append([]any{&d.ID, &d.Source, &d.Reason, &d.Subject, &d.Stream, &seq, &d.Size, &d.Truncated,
		&d.RecordedAt, &d.RedrivenAt}, more...)...); err != nil {
		return err
	}
	d.StreamSeq = uint64(seq)
	return nil
}

// DeadLetters returns a page of dead letters.
func (v *Views) DeadLetters(ctx context.Context, q DeadLetterQuery) (DeadLetterPage, error) {
	if q.Limit <= 0 {
		return DeadLetterPage{}, fmt.Errorf("list dead letters: limit %d is not positive", q.Limit)
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.Source != "" {
		where = append(where, "source = "+arg(q.Source))
	}
	if q.Cursor != "" {
		at, id, err := decodeDeadLetterCursor(q.Cursor)
		if err != nil {
			return DeadLetterPage{}, err
		}
		// A row comparison, which the (…, recorded_at DESC, id DESC) indexes serve.
		where = append(where, "(recorded_at, id) < ("+arg(at)+", "+arg(id)+")")
	}
	sql := `SELECT ` + deadLetterSummaryColumns + ` FROM dead_letters`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	// One row more than the page tells whether there is a next one.
	sql += " ORDER BY recorded_at DESC, id DESC LIMIT " + arg(q.Limit+1)

	rows, err := v.pool.Query(ctx, sql, args...)
	if err != nil {
		return DeadLetterPage{}, fmt.Errorf("list dead letters: %w", err)
	}
	defer rows.Close()
	page := DeadLetterPage{DeadLetters: []DeadLetterSummary{}}
	for rows.Next() {
		var d DeadLetterSummary
		if err := scanSummary(rows, &d); err != nil {
			return DeadLetterPage{}, fmt.Errorf("list dead letters: %w", err)
		}
		page.DeadLetters = append(page.DeadLetters, d)
	}
	if err := rows.Err(); err != nil {
		return DeadLetterPage{}, fmt.Errorf("list dead letters: %w", err)
	}
	if len(page.DeadLetters) > q.Limit {
		page.DeadLetters = page.DeadLetters[:q.Limit]
		last := page.DeadLetters[q.Limit-1]
		page.Next = encodeDeadLetterCursor(last.RecordedAt, last.ID)
	}
	return page, nil
}

// DeadLetter returns the dead letter id, or ErrDeadLetterNotFound.
func (v *Views) DeadLetter(ctx context.Context, id string) (DeadLetter, error) {
	var (
		d       DeadLetter
		headers []byte
	)
	err := scanSummary(v.pool.QueryRow(ctx, `SELECT `+deadLetterSummaryColumns+`, headers, data FROM dead_letters WHERE id = $1`, id),
		&d.DeadLetterSummary, &headers, &d.Data)
	if errors.Is(err, pgx.ErrNoRows) {
		return DeadLetter{}, fmt.Errorf("dead letter %q: %w", id, ErrDeadLetterNotFound)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("read dead letter %s: %w", id, err)
	}
	if err := json.Unmarshal(headers, &d.Headers); err != nil {
		return DeadLetter{}, fmt.Errorf("read dead letter %s headers: %w", id, err)
	}
	if d.Headers == nil {
		d.Headers = map[string][]string{}
	}
	if d.Data == nil {
		d.Data = []byte{}
	}
	return d, nil
}

// A dead letters' cursor is the last row's sort key, "<recorded_at in Unix microseconds>.<id>",
// in base64url.
func encodeDeadLetterCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "." + id))
}

func decodeDeadLetterCursor(s string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w %q: not one a page gave", ErrCursor, s)
	}
	micros, id, ok := strings.Cut(string(b), ".")
	n, nerr := strconv.ParseInt(micros, 10, 64)
	if !ok || nerr != nil || id == "" || !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		return time.Time{}, "", fmt.Errorf("%w %q: not one a page gave", ErrCursor, s)
	}
	return time.UnixMicro(n).UTC(), id, nil
}
