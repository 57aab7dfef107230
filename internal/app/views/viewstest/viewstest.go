// Package viewstest fills the projections' tables for the benchmarks of the packages that
// read them (the API's and the UI's lists).
package viewstest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/app/views"
)

// LoadExecutions copies n executions rows into pool's database (migrated), one a second back from now:
// 20 workflows; a status of seven, completed the most; every other row triggered, by one of
// 10 providers, on one of n/4 blobs (two executions each). It returns a cursor deep in the list (its 90%).
func LoadExecutions(tb testing.TB, pool *pgxpool.Pool, n int) (deep string) {
	tb.Helper()
	ctx := context.Background()
	statuses := []string{"completed", "completed", "completed", "completed", "failed", "cancelled", "running",
		"completed", "queued", "retry_scheduled", "completed", "compensating"}
	now := time.Now().UTC().Truncate(time.Microsecond)
	input := []byte(`{"blob": {"blob_id": "b", "version": 3, "content": "# A title\n\nSome text of a document."}, "options": {"lang": "en"}}`)
	output := []byte(`{"summary": "a document", "delta_operations": [{"op": "add", "path": "/metadata/summary", "value": "a document"}]}`)
	rows := make([][]any, n)
	for i := range rows {
		var provider, blob any
		if i%2 == 0 {
			provider, blob = fmt.Sprint("provider-", i%10), fmt.Sprint("blob-", i%(n/4))
		}
		status := statuses[i%len(statuses)]
		queued := now.Add(-time.Duration(i) * time.Second)
		var started, ended any
		if status != "queued" {
			started = queued.Add(time.Millisecond)
		}
		switch status {
		case "completed", "failed", "cancelled":
			ended = queued.Add(50 * time.Millisecond)
		}
		rows[i] = []any{uuid.New(), fmt.Sprint("workflow-", i%20), 1, status, i % 100, input, output, 1,
			provider, blob, queued, started, ended, queued}
	}
	_, err := pool.CopyFrom(ctx, pgx.Identifier{"executions"}, []string{"execution_id", "workflow_id",
		"workflow_revision", "status", "priority", "input", "output", "run", "provider_id", "blob_id", "queued_at",
		"started_at", "ended_at", "updated_at"}, pgx.CopyFromRows(rows))
	require.NoError(tb, err)
	_, err = pool.Exec(ctx, "ANALYZE executions")
	require.NoError(tb, err)
	page, err := views.New(pool).Executions(ctx, views.ExecutionQuery{Limit: n * 9 / 10})
	require.NoError(tb, err)
	require.NotEmpty(tb, page.Next)
	return page.Next
}
