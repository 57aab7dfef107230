package views

import (
	"context"
	"fmt"
)

// Checkpoint is how far a projection has applied its stream.
type Checkpoint struct {
	Projection, Stream string
	// LastSeq is the last stream sequence it applied.
	LastSeq uint64
}

// Checkpoints returns the checkpoint of every projection that has written one.
func (v *Views) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	rows, err := v.pool.Query(ctx, `SELECT projection, stream, last_seq FROM projection_checkpoints`)
	if err != nil {
		return nil, fmt.Errorf("read the projections' checkpoints: %w", err)
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		var (
			c    Checkpoint
			last int64
		)
		if err := rows.Scan(&c.Projection, &c.Stream, &last); err != nil {
			return nil, fmt.Errorf("read the projections' checkpoints: %w", err)
		}
		c.LastSeq = uint64(last)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the projections' checkpoints: %w", err)
	}
	return out, nil
}

// ExecutionsByStatus counts the rows of the executions table by status. It reads the whole
// table's status index: for metrics, under a short timeout.
func (v *Views) ExecutionsByStatus(ctx context.Context) (map[string]int64, error) {
	rows, err := v.pool.Query(ctx, `SELECT status, count(*) FROM executions GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count executions by status: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var (
			s string
			n int64
		)
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("count executions by status: %w", err)
		}
		out[s] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count executions by status: %w", err)
	}
	return out, nil
}
