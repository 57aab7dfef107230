package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
)

// DeadLetters is the dead_letters projection: one row per dead letter of MEMMIE_DEADLETTER,
// with the original message, marked redriven_at once it was sent back.
//
//   - The row's id is the dead letter's event id (internal/jetstream/deadletter: derived from
//     the source and the original's stream position). A dead letter recorded again under the
//     same id, past the stream's duplicate window, keeps the first row.
//   - recorded_at is the dead-letter event's time, redriven_at the latest redrive's
//     (events.DeadLetterRedriven): both come from the events, so that a rebuild gives the same
//     rows.
//   - A \u0000 in a text or in a header, which Postgres' text and jsonb cannot hold, is stored
//     as U+FFFD: a dead letter must be readable whatever it holds. Its data is kept as it is.
type DeadLetters struct {
	log *slog.Logger
}

// NewDeadLetters returns the dead_letters projection. A nil log discards.
func NewDeadLetters(log *slog.Logger) *DeadLetters {
	return &DeadLetters{log: orDiscard(log)}
}

func (*DeadLetters) Name() string   { return "dead_letters" }
func (*DeadLetters) Stream() string { return streams.DeadLetter }

// deadLetterRow is a row of dead_letters. An empty Stream, a zero StreamSeq or RedrivenAt is NULL.
type deadLetterRow struct {
	ID         string
	Source     string
	Reason     string
	Subject    string
	Headers    map[string][]string
	Data       []byte
	Truncated  bool
	Stream     string
	StreamSeq  uint64
	RecordedAt time.Time
	RedrivenAt time.Time
}

// deadLetterOf returns the id of the row that ev is about.
func deadLetterOf(ev Event) (string, bool) {
	switch d := ev.Data.(type) {
	case *events.DeadLetter:
		return ev.ID, true
	case *events.DeadLetterRedriven:
		return d.DeadLetterID, true
	}
	return "", false
}

// foldDeadLetter folds one event into row, which is nil when the dead letter has no row yet. It
// returns the row after the event and whether the event changed it. It is pure and
// idempotent: a dead letter makes its row once, and a redrive only moves redriven_at later.
// Times are cut to Postgres' microseconds, so that a row read back folds to itself.
func foldDeadLetter(row *deadLetterRow, ev Event) (*deadLetterRow, bool) {
	at := ev.Time.UTC().Truncate(time.Microsecond)
	switch d := ev.Data.(type) {
	case *events.DeadLetter:
		if row != nil {
			return row, false
		}
		var headers map[string][]string
		if len(d.Headers) > 0 {
			headers = make(map[string][]string, len(d.Headers))
			for k, vs := range d.Headers {
				vs = slices.Clone(vs)
				for i := range vs {
					vs[i] = noNUL(vs[i])
				}
				headers[noNUL(k)] = vs
			}
		}
		return &deadLetterRow{
			ID: ev.ID, Source: noNUL(d.Source), Reason: noNUL(d.Reason), Subject: noNUL(d.Subject),
			Headers: headers, Data: d.Data, Truncated: d.Truncated, Stream: noNUL(d.Stream), StreamSeq: d.Sequence,
			RecordedAt: at,
		}, true
	case *events.DeadLetterRedriven:
		// The dead letter precedes its redrive in the stream: a redrive without a row has
		// nothing to mark.
		if row == nil || !at.After(row.RedrivenAt) {
			return row, false
		}
		r := *row
		r.RedrivenAt = at
		return &r, true
	}
	return row, false
}

// noNUL replaces each \u0000 of s, which Postgres' text and jsonb refuse, with U+FFFD.
func noNUL(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }

// Apply loads the rows of the batch's dead letters, folds the batch into them and upserts the
// rows it changed in one INSERT ... ON CONFLICT over arrays.
func (p *DeadLetters) Apply(ctx context.Context, tx pgx.Tx, batch []Event) error {
	var ids []string
	seen := make(map[string]bool, len(batch))
	for _, ev := range batch {
		if id, ok := deadLetterOf(ev); ok && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := loadDeadLetters(ctx, tx, ids)
	if err != nil {
		return err
	}
	var changed []string
	dirty := make(map[string]bool)
	for _, ev := range batch {
		id, ok := deadLetterOf(ev)
		if !ok {
			continue
		}
		row, ch := foldDeadLetter(rows[id], ev)
		if !ch {
			continue
		}
		rows[id] = row
		if !dirty[id] {
			dirty[id] = true
			changed = append(changed, id)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	return upsertDeadLetters(ctx, tx, rows, changed)
}

const deadLetterColumns = `id, source, reason, subject, headers, data, truncated, stream, stream_seq, recorded_at, redriven_at`

func loadDeadLetters(ctx context.Context, tx pgx.Tx, ids []string) (map[string]*deadLetterRow, error) {
	rs, err := tx.Query(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("load dead letters: %w", err)
	}
	defer rs.Close()
	out := make(map[string]*deadLetterRow, len(ids))
	for rs.Next() {
		var (
			r        deadLetterRow
			headers  []byte
			stream   *string
			seq      *int64
			redriven *time.Time
		)
		if err := rs.Scan(&r.ID, &r.Source, &r.Reason, &r.Subject, &headers, &r.Data, &r.Truncated, &stream, &seq,
			&r.RecordedAt, &redriven); err != nil {
			return nil, fmt.Errorf("load dead letters: %w", err)
		}
		if err := json.Unmarshal(headers, &r.Headers); err != nil {
			return nil, fmt.Errorf("load dead letter %s headers: %w", r.ID, err)
		}
		if len(r.Headers) == 0 {
			r.Headers = nil
		}
		r.Stream = deref(stream)
		if seq != nil {
			r.StreamSeq = uint64(*seq)
		}
		if redriven != nil {
			r.RedrivenAt = redriven.UTC()
		}
		r.RecordedAt = r.RecordedAt.UTC()
		out[r.ID] = &r
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("load dead letters: %w", err)
	}
	return out, nil
}

func upsertDeadLetters(ctx context.Context, tx pgx.Tx, rows map[string]*deadLetterRow, ids []string) error {
	n := len(ids)
	var (
		source, reason, subject, headers = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		data                             = make([][]byte, n)
		truncated                        = make([]bool, n)
		stream                           = make([]*string, n)
		seq                              = make([]*int64, n)
		recorded                         = make([]time.Time, n)
		redriven                         = make([]*time.Time, n)
	)
	for i, id := range ids {
		r := rows[id]
		h := []byte("{}")
		if r.Headers != nil {
			var err error
			if h, err = json.Marshal(r.Headers); err != nil {
				return fmt.Errorf("dead letter %s headers: %w", id, err)
			}
		}
		source[i], reason[i], subject[i], headers[i] = r.Source, r.Reason, r.Subject, string(h)
		data[i], truncated[i], stream[i] = r.Data, r.Truncated, text([]byte(r.Stream))
		if r.StreamSeq != 0 {
			s := int64(r.StreamSeq)
			seq[i] = &s
		}
		recorded[i], redriven[i] = r.RecordedAt, timePtr(r.RedrivenAt)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO dead_letters (`+deadLetterColumns+`)
		SELECT id, src, rsn, subj, hdr::jsonb, dat, trunc, strm, sq, rec, red
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bool[],
			$8::text[], $9::bigint[], $10::timestamptz[], $11::timestamptz[])
			AS r(id, src, rsn, subj, hdr, dat, trunc, strm, sq, rec, red)
		ON CONFLICT (id) DO UPDATE SET
			source = EXCLUDED.source, reason = EXCLUDED.reason, subject = EXCLUDED.subject,
			headers = EXCLUDED.headers, data = EXCLUDED.data, truncated = EXCLUDED.truncated,
			stream = EXCLUDED.stream, stream_seq = EXCLUDED.stream_seq, recorded_at = EXCLUDED.recorded_at,
			redriven_at = EXCLUDED.redriven_at`,
		ids, source, reason, subject, headers, data, truncated, stream, seq, recorded, redriven); err != nil {
		return fmt.Errorf("upsert dead letters: %w", err)
	}
	return nil
}
