package projections

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
)

// Definitions is the definitions projection: one row per registered revision of every schema,
// workflow and provider in the definitions table, folded from MEMMIE_DEFINITIONS. It agrees
// with the registry's view (internal/registry), revision for revision:
//
//   - current marks the highest revision of a definition;
//   - active is true on the current revision while the definition is not deactivated, and false
//     on every other revision (as registry.Revision.Active);
//   - a deactivation applies to the revision it names only while that one is current; a
//     revision registered after it is current and active again;
//   - a revision whose definition the registry could not parse, or registered a second time, is
//     left out, as the registry leaves it out;
//   - registered_at is the registering event's time (the registry reports the stream's
//     timestamp, which is a moment later), so that a rebuild gives the same rows.
type Definitions struct {
	log *slog.Logger
}

// NewDefinitions returns the definitions projection. A nil log discards.
func NewDefinitions(log *slog.Logger) *Definitions {
	return &Definitions{log: orDiscard(log)}
}

func (*Definitions) Name() string   { return "definitions" }
func (*Definitions) Stream() string { return streams.Definitions }

// definitionKey names a definition.
type definitionKey struct {
	Kind string
	ID   string
}

// definitionRow is a row of the definitions table.
type definitionRow struct {
	definitionKey
	Revision     int
	Current      bool
	Active       bool
	Canonical    []byte
	RegisteredAt time.Time
}

// definitionRows are the rows of one definition, by revision.
type definitionRows map[int]*definitionRow

// current returns the current revision's row, nil when there is none.
func (rs definitionRows) current() *definitionRow {
	for _, r := range rs {
		if r.Current {
			return r
		}
	}
	return nil
}

// definitionOf returns the definition an event is about, false for an event the projection
// leaves alone.
func definitionOf(ev Event) (definitionKey, bool) {
	switch d := ev.Data.(type) {
	case *events.DefinitionRegistered:
		return definitionKey{d.Kind, d.ID}, true
	case *events.DefinitionDeactivated:
		return definitionKey{d.Kind, d.ID}, true
	}
	return definitionKey{}, false
}

// foldDefinition folds one event into rows, the rows of the event's definition, and returns
// the revisions whose rows it changed. It does no I/O, and it is idempotent: a revision
// registered again and a deactivation that no longer applies change nothing. An error says why
// the event is left out; rows are then unchanged.
func foldDefinition(rows definitionRows, ev Event) ([]int, error) {
	cur := rows.current()
	switch d := ev.Data.(type) {
	case *events.DefinitionRegistered:
		if subject, err := events.DefinitionSubject(d.Kind, d.ID); err != nil || subject != ev.Subject {
			return nil, fmt.Errorf("%s %q revision %d on subject %q", d.Kind, d.ID, d.Revision, ev.Subject)
		}
		if rows[d.Revision] != nil {
			return nil, nil // registered already: replayed, or (as the registry sees it) twice
		}
		// What the registry cannot parse is not in its view: nor in the table.
		kind := definitions.Kind(d.Kind)
		if _, err := definitions.Parse(string(kind)+"s/"+d.ID, d.Definition, kind); err != nil {
			return nil, fmt.Errorf("%s %q revision %d: %w", d.Kind, d.ID, d.Revision, err)
		}
		row := &definitionRow{definitionKey: definitionKey{d.Kind, d.ID}, Revision: d.Revision,
			Canonical: bytes.Clone(d.Definition), RegisteredAt: ev.Time}
		rows[d.Revision] = row
		changed := []int{d.Revision}
		if cur == nil || d.Revision > cur.Revision {
			if cur != nil {
				cur.Current, cur.Active = false, false
				changed = append(changed, cur.Revision)
			}
			row.Current, row.Active = true, true
		}
		return changed, nil
	case *events.DefinitionDeactivated:
		if cur == nil || cur.Revision != d.Revision || !cur.Active {
			return nil, nil
		}
		cur.Active = false
		return []int{cur.Revision}, nil
	}
	return nil, nil
}

// Apply loads the rows of the batch's definitions, folds the batch into them and writes the
// rows it changed.
func (p *Definitions) Apply(ctx context.Context, tx pgx.Tx, batch []Event) error {
	var keys []definitionKey
	seen := map[definitionKey]bool{}
	for _, ev := range batch {
		if k, ok := definitionOf(ev); ok && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	rows, err := loadDefinitions(ctx, tx, keys)
	if err != nil {
		return err
	}
	type dirtyKey struct {
		definitionKey
		revision int
	}
	var changed []*definitionRow
	dirty := map[dirtyKey]bool{}
	for _, ev := range batch {
		k, ok := definitionOf(ev)
		if !ok {
			continue
		}
		revs, err := foldDefinition(rows[k], ev)
		if err != nil {
			p.log.Error("definitions projection: event left out", "event_id", ev.ID, "seq", ev.Seq, "err", err)
			continue
		}
		for _, rev := range revs {
			if dk := (dirtyKey{k, rev}); !dirty[dk] {
				dirty[dk] = true
				changed = append(changed, rows[k][rev])
			}
		}
	}
	// The rows that stop being current first: the unique index of the current revisions is
	// checked row by row.
	var first, then []*definitionRow
	for _, r := range changed {
		if r.Current {
			then = append(then, r)
		} else {
			first = append(first, r)
		}
	}
	if err := upsertDefinitions(ctx, tx, first); err != nil {
		return err
	}
	return upsertDefinitions(ctx, tx, then)
}

func loadDefinitions(ctx context.Context, tx pgx.Tx, keys []definitionKey) (map[definitionKey]definitionRows, error) {
	kinds, ids := make([]string, len(keys)), make([]string, len(keys))
	out := make(map[definitionKey]definitionRows, len(keys))
	for i, k := range keys {
		kinds[i], ids[i] = k.Kind, k.ID
		out[k] = definitionRows{}
	}
	rs, err := tx.Query(ctx, `SELECT d.kind, d.id, d.revision, d.current, d.active, d.canonical, d.registered_at
		FROM unnest($1::text[], $2::text[]) AS k(kind, id)
		JOIN definitions d ON (d.kind, d.id) = (k.kind, k.id)`, kinds, ids)
	if err != nil {
		return nil, fmt.Errorf("load definitions: %w", err)
	}
	defer rs.Close()
	for rs.Next() {
		var r definitionRow
		if err := rs.Scan(&r.Kind, &r.ID, &r.Revision, &r.Current, &r.Active, &r.Canonical, &r.RegisteredAt); err != nil {
			return nil, fmt.Errorf("load definitions: %w", err)
		}
		out[r.definitionKey][r.Revision] = &r
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("load definitions: %w", err)
	}
	return out, nil
}

func upsertDefinitions(ctx context.Context, tx pgx.Tx, rows []*definitionRow) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	var (
		kinds, ids, canonical = make([]string, n), make([]string, n), make([]string, n)
		revisions             = make([]int32, n)
		current, active       = make([]bool, n), make([]bool, n)
		at                    = make([]time.Time, n)
	)
	for i, r := range rows {
		kinds[i], ids[i], canonical[i], revisions[i] = r.Kind, r.ID, string(r.Canonical), int32(r.Revision)
		current[i], active[i], at[i] = r.Current, r.Active, r.RegisteredAt
	}
	if _, err := tx.Exec(ctx, `INSERT INTO definitions (kind, id, revision, current, active, canonical, registered_at)
		SELECT kind, id, rev, cur, act, canon::jsonb, at
		FROM unnest($1::text[], $2::text[], $3::int[], $4::bool[], $5::bool[], $6::text[], $7::timestamptz[])
			AS r(kind, id, rev, cur, act, canon, at)
		ON CONFLICT (kind, id, revision) DO UPDATE SET
			current = EXCLUDED.current, active = EXCLUDED.active, canonical = EXCLUDED.canonical,
			registered_at = EXCLUDED.registered_at`,
		kinds, ids, revisions, current, active, canonical, at); err != nil {
		return fmt.Errorf("upsert definitions: %w", err)
	}
	return nil
}
