package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/blob"
)

// BlobSnapshotEvery is how often a blob_versions row holds the blob's whole state: at version 1
// and at every multiple of it. The document at a version is then the nearest snapshot below it
// and fewer than BlobSnapshotEvery deltas folded on it (views.Views.BlobAt), whatever the
// number of versions: a blob of 10,000 versions keeps 101 snapshots, and an answer folds at
// most 99 deltas. Storing every version's document instead would cost 10,000 documents; folding
// from version 1 would cost 10,000 deltas per answer.
const BlobSnapshotEvery = 100

// Blobs is the blobs projection of MEMMIE_DELTAS: the blobs table holds each blob's current
// document (a blob.State), blob_versions every delta with its lineage, and every
// BlobSnapshotEvery versions the state at that version.
//
//   - The document is blob.State.Apply's, the rule the blob writer applies: the projection
//     loads the state of each blob of a batch from its row once, applies the batch's deltas to
//     it in stream order and writes it back. Apply reads none of what a state's row leaves out
//     (the event ids and execution counts that Decide and Deltas need), so a state rebuilt from
//     its row applies a delta as the writer's does.
//   - A delta at or below the blob's last stream sequence was applied: it changes nothing.
//   - A delta that cannot apply (a version gap, a first delta that is not a create, anything
//     after a delete, a delta on another blob's subject, a second delta of a version) can
//     never apply, since the deltas after it can only follow it: the Runner dead-letters it
//     with the reason, as it does an event whose rows Postgres refuses, and the blob keeps the
//     versions before it. Such a delta means a writer broke the one-writer rule; a redrive
//     refuses MEMMIE_DELTAS, whose history only memmie appends to.
//   - The columns' times are to the microsecond, as Postgres keeps them; a snapshot's JSON keeps
//     the delta's own.
type Blobs struct {
	log *slog.Logger
	// every is BlobSnapshotEvery, smaller in tests.
	every int64
}

// NewBlobs returns the blobs projection. A nil log discards.
func NewBlobs(log *slog.Logger) *Blobs {
	return &Blobs{log: orDiscard(log), every: BlobSnapshotEvery}
}

func (*Blobs) Name() string   { return "blobs" }
func (*Blobs) Stream() string { return streams.Deltas }

// Tables are the tables the projection writes.
func (*Blobs) Tables() []string { return []string{"blobs", "blob_versions"} }

// errUnappliable marks an event that a projection can never apply to its rows; the Runner
// dead-letters it (see refused).
var errUnappliable = errors.New("cannot apply")

// blobRow is a blob as the projection holds it while it applies a batch.
type blobRow struct {
	state     blob.State
	seq       uint64
	createdAt time.Time
}

// Apply loads the rows of the batch's blobs, applies the batch's deltas to their states and
// writes the blobs it changed and one blob_versions row per delta applied.
func (p *Blobs) Apply(ctx context.Context, tx pgx.Tx, batch []Event) error {
	var ids []string
	seen := map[string]bool{}
	for _, ev := range batch {
		if d, ok := ev.Data.(*events.Delta); ok && !seen[d.BlobID] {
			seen[d.BlobID] = true
			ids = append(ids, d.BlobID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := loadBlobs(ctx, tx, ids)
	if err != nil {
		return err
	}
	var (
		changed  []string
		dirty    = map[string]bool{}
		versions []blobVersion
	)
	for _, ev := range batch {
		d, ok := ev.Data.(*events.Delta)
		if !ok {
			continue
		}
		row := rows[d.BlobID]
		if row != nil && ev.Seq <= row.seq {
			continue // applied already
		}
		if subj, err := events.ParseDeltaSubject(ev.Subject); err != nil || subj != d.BlobID {
			return fmt.Errorf("%w: delta %s (seq %d) of blob %q on subject %q", errUnappliable, d.ID, ev.Seq, d.BlobID, ev.Subject)
		}
		if row == nil {
			row = &blobRow{createdAt: d.Timestamp}
		}
		if err := row.state.Apply(*d); err != nil {
			return fmt.Errorf("%w: seq %d: %w", errUnappliable, ev.Seq, err)
		}
		row.seq = ev.Seq
		rows[d.BlobID] = row
		v := blobVersion{delta: *d, seq: ev.Seq}
		if d.Version == 1 || d.Version%p.every == 0 {
			if v.snapshot, err = json.Marshal(&row.state); err != nil {
				return fmt.Errorf("snapshot blob %s at version %d: %w", d.BlobID, d.Version, err)
			}
		}
		versions = append(versions, v)
		if !dirty[d.BlobID] {
			dirty[d.BlobID] = true
			changed = append(changed, d.BlobID)
		}
	}
	if len(versions) == 0 {
		return nil
	}
	if err := insertBlobVersions(ctx, tx, versions); err != nil {
		return err
	}
	return upsertBlobs(ctx, tx, rows, changed)
}

const blobColumns = `blob_id, user_id, version, content, metadata, deleted, derived_from, derived, last_delta_id, last,
	seq, created_at, updated_at`

// loadBlobs reads the rows of ids, as states to apply deltas to.
func loadBlobs(ctx context.Context, tx pgx.Tx, ids []string) (map[string]*blobRow, error) {
	rs, err := tx.Query(ctx, `SELECT `+blobColumns+` FROM blobs WHERE blob_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("load blobs: %w", err)
	}
	defer rs.Close()
	out := make(map[string]*blobRow, len(ids))
	for rs.Next() {
		r, err := scanBlob(rs)
		if err != nil {
			return nil, fmt.Errorf("load blobs: %w", err)
		}
		out[r.state.BlobID] = r
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("load blobs: %w", err)
	}
	return out, nil
}

// scanBlob scans a row of blobColumns: the state it holds, from which Apply goes on.
func scanBlob(row pgx.Row) (*blobRow, error) {
	var (
		r                            blobRow
		user                         *string
		content, metadata, from, der []byte
		last                         []byte
		seq                          int64
	)
	if err := row.Scan(&r.state.BlobID, &user, &r.state.Version, &content, &metadata, &r.state.Deleted, &from, &der,
		&r.state.LastDeltaID, &last, &seq, &r.createdAt, &r.state.UpdatedAt); err != nil {
		return nil, err
	}
	r.state.UserID = deref(user)
	r.state.Content, r.state.Metadata = content, metadata
	if from != nil {
		if err := json.Unmarshal(from, &r.state.DerivedFrom); err != nil {
			return nil, fmt.Errorf("blob %s: derived_from: %w", r.state.BlobID, err)
		}
	}
	if err := json.Unmarshal(der, &r.state.Derived); err != nil {
		return nil, fmt.Errorf("blob %s: derived: %w", r.state.BlobID, err)
	}
	if err := json.Unmarshal(last, &r.state.Last); err != nil {
		return nil, fmt.Errorf("blob %s: last: %w", r.state.BlobID, err)
	}
	r.state.UpdatedAt = r.state.UpdatedAt.UTC()
	r.createdAt = r.createdAt.UTC()
	r.seq = uint64(seq)
	return &r, nil
}

func upsertBlobs(ctx context.Context, tx pgx.Tx, rows map[string]*blobRow, ids []string) error {
	n := len(ids)
	var (
		user, from                       = make([]*string, n), make([]*string, n)
		content, metadata, derived, last = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		lastID                           = make([]string, n)
		version, seq                     = make([]int64, n), make([]int64, n)
		deleted                          = make([]bool, n)
		created, updated                 = make([]time.Time, n), make([]time.Time, n)
	)
	for i, id := range ids {
		r := rows[id]
		s := &r.state
		user[i] = text([]byte(s.UserID))
		version[i], seq[i], deleted[i] = s.Version, int64(r.seq), s.Deleted
		content[i], metadata[i] = string(s.Snapshot().Content), string(s.Snapshot().Metadata)
		if s.DerivedFrom != nil {
			b, err := json.Marshal(s.DerivedFrom)
			if err != nil {
				return fmt.Errorf("upsert blob %s: %w", id, err)
			}
			from[i] = text(b)
		}
		d := s.Derived
		if d == nil {
			d = []string{}
		}
		b, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("upsert blob %s: %w", id, err)
		}
		derived[i] = string(b)
		if b, err = json.Marshal(s.Last); err != nil {
			return fmt.Errorf("upsert blob %s: %w", id, err)
		}
		last[i], lastID[i] = string(b), s.LastDeltaID
		created[i], updated[i] = r.createdAt, s.UpdatedAt
	}
	if _, err := tx.Exec(ctx, `INSERT INTO blobs (`+blobColumns+`)
		SELECT id, usr, ver, c::json, m::json, del, df::json, der::json, lid, lst::json, sq, cr, up
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::text[],
			$9::text[], $10::text[], $11::bigint[], $12::timestamptz[], $13::timestamptz[])
			AS r(id, usr, ver, c, m, del, df, der, lid, lst, sq, cr, up)
		ON CONFLICT (blob_id) DO UPDATE SET
			user_id = EXCLUDED.user_id, version = EXCLUDED.version, content = EXCLUDED.content,
			metadata = EXCLUDED.metadata, deleted = EXCLUDED.deleted, derived_from = EXCLUDED.derived_from,
			derived = EXCLUDED.derived, last_delta_id = EXCLUDED.last_delta_id, last = EXCLUDED.last,
			seq = EXCLUDED.seq, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at`,
		ids, user, version, content, metadata, deleted, from, derived, lastID, last, seq, created, updated); err != nil {
		return fmt.Errorf("upsert blobs: %w", err)
	}
	return nil
}

// blobVersion is a blob_versions row to insert: a delta, with the blob's state when it is a
// snapshot version.
type blobVersion struct {
	delta    events.Delta
	seq      uint64
	snapshot []byte
}

func insertBlobVersions(ctx context.Context, tx pgx.Tx, vs []blobVersion) error {
	n := len(vs)
	var (
		blobID, deltaID, typ                = make([]string, n), make([]string, n), make([]string, n)
		path, from, oldV, newV, snap        = make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
		provider, workflow, execution, step = make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
		source                              = make([]*string, n)
		revision                            = make([]*int32, n)
		lineage                             = make([]string, n)
		version, base, seq                  = make([]int64, n), make([]int64, n), make([]int64, n)
		at                                  = make([]time.Time, n)
	)
	for i, v := range vs {
		d := &v.delta
		blobID[i], deltaID[i], typ[i] = d.BlobID, d.ID, d.Type
		version[i], base[i], seq[i] = d.Version, d.BaseVersion, int64(v.seq)
		path[i], from[i] = text([]byte(d.Path)), text([]byte(d.From))
		oldV[i], newV[i], snap[i] = text(d.OldValue), text(d.NewValue), text(v.snapshot)
		m := &d.Metadata
		provider[i], workflow[i] = text([]byte(d.ProviderID)), text([]byte(m.WorkflowID))
		execution[i], step[i], source[i] = text([]byte(m.ExecutionID)), text([]byte(m.StepID)), text([]byte(m.SourceEventID))
		if m.WorkflowRevision != 0 {
			r := int32(m.WorkflowRevision)
			revision[i] = &r
		}
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("insert blob versions: delta %s: %w", d.ID, err)
		}
		lineage[i], at[i] = string(b), d.Timestamp
	}
	if _, err := tx.Exec(ctx, `INSERT INTO blob_versions (blob_id, version, delta_id, base_version, type, path, from_path,
			old_value, new_value, provider_id, workflow_id, workflow_revision, execution_id, step_id, source_event_id,
			lineage, timestamp, seq, snapshot)
		SELECT b, v, id, bv, ty, p, f, o::json, nv::json, pr, wf, rev, ex, st, src, lin::json, t, sq, sn::json
		FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[],
			$9::text[], $10::text[], $11::text[], $12::int[], $13::text[], $14::text[], $15::text[], $16::text[],
			$17::timestamptz[], $18::bigint[], $19::text[])
			AS r(b, v, id, bv, ty, p, f, o, nv, pr, wf, rev, ex, st, src, lin, t, sq, sn)`,
		blobID, version, deltaID, base, typ, path, from, oldV, newV, provider, workflow, revision, execution, step, source,
		lineage, at, seq, snap); err != nil {
		return fmt.Errorf("insert blob versions: %w", err)
	}
	return nil
}
