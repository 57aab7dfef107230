package views

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	var lq listQuery
	if q.Source != "" {
		lq.where = append(lq.where, "source = "+lq.arg(q.Source))
	}
	if q.Cursor != "" {
		at, id, err := decodeTimeCursor(q.Cursor, parseDeadLetterID)
		if err != nil {
			return DeadLetterPage{}, err
		}
		// A row comparison, which the (…, recorded_at DESC, id DESC) indexes serve.
		lq.where = append(lq.where, "(recorded_at, id) < ("+lq.arg(at)+", "+lq.arg(id)+")")
	}
	sql := lq.sql(`SELECT `+deadLetterSummaryColumns+` FROM dead_letters`, "recorded_at DESC, id DESC", q.Limit)
	rows, next, err := readPage(ctx, v, "dead letters", sql, &lq, q.Limit,
		func(rows pgx.Rows) (DeadLetterSummary, error) {
			var d DeadLetterSummary
			err := scanSummary(rows, &d)
			return d, err
		},
		func(d DeadLetterSummary) string { return encodeTimeCursor(d.RecordedAt, d.ID) })
	if err != nil {
		return DeadLetterPage{}, err
	}
	return DeadLetterPage{DeadLetters: rows, Next: next}, nil
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

// parseDeadLetterID checks the id of a dead letters' cursor (a time cursor): text that a row's id
// can be.
func parseDeadLetterID(id string) (string, error) {
	if id == "" || !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		return "", errors.New("not a dead letter id")
	}
	return id, nil
}
