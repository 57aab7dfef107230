package views

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

// ErrBlobNotFound is the error of a blob that the blobs table does not hold; ErrVersionNotFound
// that of a version the blob does not have (yet).
var (
	ErrBlobNotFound    = errors.New("no such blob")
	ErrVersionNotFound = errors.New("no such version")
)

// BlobDeltaPage is a page of a blob's deltas, in version order.
type BlobDeltaPage struct {
	// Deltas are the contract's delta data, as appended on memmie.deltas.<blob_id>.
	Deltas []events.Delta `json:"deltas"`
	// Next, when set, is the after of the next page (the last version of this one): more
	// deltas followed when the page was read. Absent on the last page.
	Next string `json:"next,omitempty"`
}

// Blob returns a blob's current state, as the blobs projection holds it.
func (v *Views) Blob(ctx context.Context, id string) (blob.State, error) {
	s, err := readBlob(ctx, v.pool, id)
	if err != nil {
		return blob.State{}, fmt.Errorf("read blob %s: %w", id, err)
	}
	return s, nil
}

// BlobAt returns a blob's state at a version: the nearest snapshot at or below it in
// blob_versions with the deltas after it folded on it by blob.State.Apply, the rule the writer
// and the projection apply. The projection snapshots every projections.BlobSnapshotEvery
// versions, so that this folds fewer deltas than that however many versions the blob has.
// ErrVersionNotFound for a version below 1 or above the blob's.
func (v *Views) BlobAt(ctx context.Context, id string, version int64) (blob.State, error) {
	// One snapshot: the deltas read are those of the state read.
	tx, err := v.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return blob.State{}, fmt.Errorf("read blob %s at version %d: %w", id, version, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	s, err := readBlob(ctx, tx, id)
	switch {
	case err != nil:
		return blob.State{}, fmt.Errorf("read blob %s at version %d: %w", id, version, err)
	case version < 1 || version > s.Version:
		return blob.State{}, fmt.Errorf("%w: blob %s has versions 1 to %d, not %d", ErrVersionNotFound, id, s.Version, version)
	case version == s.Version:
		return s, nil
	}
	var (
		from int64
		snap []byte
	)
	err = tx.QueryRow(ctx, `SELECT version, snapshot::text FROM blob_versions
		WHERE blob_id = $1 AND version <= $2 AND snapshot IS NOT NULL ORDER BY version DESC LIMIT 1`, id, version).Scan(&from, &snap)
	if err != nil {
		return blob.State{}, fmt.Errorf("read blob %s at version %d: the snapshot below it: %w", id, version, err)
	}
	// The state's JSON leaves out what only Decide and Deltas read; Apply reads none of it.
	var at blob.State
	if err := json.Unmarshal(snap, &at); err != nil {
		return blob.State{}, fmt.Errorf("read blob %s at version %d: the snapshot at %d: %w", id, version, from, err)
	}
	rows, err := tx.Query(ctx, `SELECT `+deltaColumns+` FROM blob_versions
		WHERE blob_id = $1 AND version > $2 AND version <= $3 ORDER BY version`, id, from, version)
	if err != nil {
		return blob.State{}, fmt.Errorf("read blob %s at version %d: %w", id, version, err)
	}
	defer rows.Close()
	for rows.Next() {
		d, err := scanDelta(rows)
		if err != nil {
			return blob.State{}, fmt.Errorf("read blob %s at version %d: %w", id, version, err)
		}
		if err := at.Apply(d); err != nil {
			return blob.State{}, fmt.Errorf("read blob %s at version %d: %w", id, version, err)
		}
	}
	if err := rows.Err(); err != nil {
		return blob.State{}, fmt.Errorf("read blob %s at version %d: %w", id, version, err)
	}
	if at.Version != version {
		return blob.State{}, fmt.Errorf("read blob %s at version %d: the rows end at version %d", id, version, at.Version)
	}
	return at, nil
}

// BlobDeltas returns a page of a blob's deltas, in version order, those after the version
// after (0 for the first page). ErrBlobNotFound when the projection holds no such blob.
func (v *Views) BlobDeltas(ctx context.Context, id string, after int64, limit int) (BlobDeltaPage, error) {
	if limit <= 0 {
		return BlobDeltaPage{}, fmt.Errorf("list the deltas of blob %s: limit %d is not positive", id, limit)
	}
	tx, err := v.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return BlobDeltaPage{}, fmt.Errorf("list the deltas of blob %s: %w", id, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM blobs WHERE blob_id = $1)`, id).Scan(&exists); err != nil {
		return BlobDeltaPage{}, fmt.Errorf("list the deltas of blob %s: %w", id, err)
	}
	if !exists {
		return BlobDeltaPage{}, fmt.Errorf("list the deltas of blob %s: %w", id, ErrBlobNotFound)
	}
	rows, err := tx.Query(ctx, `SELECT `+deltaColumns+` FROM blob_versions WHERE blob_id = $1 AND version > $2
		ORDER BY version LIMIT $3`, id, after, limit+1)
	if err != nil {
		return BlobDeltaPage{}, fmt.Errorf("list the deltas of blob %s: %w", id, err)
	}
	page := BlobDeltaPage{Deltas: []events.Delta{}}
	page.Deltas, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.Delta, error) { return scanDelta(r) })
	if err != nil {
		return BlobDeltaPage{}, fmt.Errorf("list the deltas of blob %s: %w", id, err)
	}
	if page.Deltas == nil {
		page.Deltas = []events.Delta{}
	}
	if len(page.Deltas) > limit {
		page.Deltas = page.Deltas[:limit]
		page.Next = strconv.FormatInt(page.Deltas[limit-1].Version, 10)
	}
	return page, nil
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readBlob reads a blobs row as the state it holds.
func readBlob(ctx context.Context, q querier, id string) (blob.State, error) {
	var (
		s                       blob.State
		user, from              *string
		content, metadata, last string
		derived                 string
	)
	err := q.QueryRow(ctx, `SELECT blob_id, user_id, version, content::text, metadata::text, deleted, derived_from::text,
			derived::text, last_delta_id, last::text, updated_at
		FROM blobs WHERE blob_id = $1`, id).Scan(&s.BlobID, &user, &s.Version, &content, &metadata, &s.Deleted, &from,
		&derived, &s.LastDeltaID, &last, &s.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return blob.State{}, ErrBlobNotFound
	}
	if err != nil {
		return blob.State{}, err
	}
	if user != nil {
		s.UserID = *user
	}
	s.Content, s.Metadata = json.RawMessage(content), json.RawMessage(metadata)
	if from != nil {
		if err := json.Unmarshal([]byte(*from), &s.DerivedFrom); err != nil {
			return blob.State{}, fmt.Errorf("derived_from: %w", err)
		}
	}
	if err := json.Unmarshal([]byte(derived), &s.Derived); err != nil {
		return blob.State{}, fmt.Errorf("derived: %w", err)
	}
	if len(s.Derived) == 0 {
		s.Derived = nil
	}
	if err := json.Unmarshal([]byte(last), &s.Last); err != nil {
		return blob.State{}, fmt.Errorf("last: %w", err)
	}
	s.UpdatedAt = s.UpdatedAt.UTC()
	return s, nil
}

const deltaColumns = `delta_id, blob_id, version, base_version, coalesce(provider_id, ''), type, coalesce(path, ''),
	coalesce(from_path, ''), old_value::text, new_value::text, timestamp, lineage::text`

// scanDelta scans a blob_versions row of deltaColumns as the delta it holds.
func scanDelta(row pgx.Row) (events.Delta, error) {
	var (
		d          events.Delta
		oldV, newV *string
		lineage    string
	)
	if err := row.Scan(&d.ID, &d.BlobID, &d.Version, &d.BaseVersion, &d.ProviderID, &d.Type, &d.Path, &d.From, &oldV, &newV,
		&d.Timestamp, &lineage); err != nil {
		return events.Delta{}, err
	}
	if oldV != nil {
		d.OldValue = json.RawMessage(*oldV)
	}
	if newV != nil {
		d.NewValue = json.RawMessage(*newV)
	}
	if err := json.Unmarshal([]byte(lineage), &d.Metadata); err != nil {
		return events.Delta{}, fmt.Errorf("delta %s: lineage: %w", d.ID, err)
	}
	d.Timestamp = d.Timestamp.UTC()
	return d, nil
}
