package ui_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/app/ui"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/internal/registry"
)

// benchExecutions is how many rows the list benchmark loads into the executions projection.
const benchExecutions = 100_000

// loadExecutions copies n executions rows into pool's database, one a second back from now:
// 20 workflows; a status of seven, completed the most; every other row triggered, by one of
// 10 providers, on one of n/4 blobs (two executions each). It returns a cursor deep in the
// list (its 90%). (internal/app/api's benchmark loads the same rows.)
func loadExecutions(b *testing.B, pool *pgxpool.Pool, n int) (deep string) {
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
	require.NoError(b, err)
	_, err = pool.Exec(ctx, "ANALYZE executions")
	require.NoError(b, err)
	page, err := views.New(pool).Executions(ctx, views.ExecutionQuery{Limit: n * 9 / 10})
	require.NoError(b, err)
	require.NotEmpty(b, page.Next)
	return page.Next
}

// BenchmarkExecutionsPage measures one page (DefaultPageSize rows) of /ui/executions, rendered,
// with 100k executions in the projection: unfiltered, by status, workflow, provider and blob,
// and deep in the cursor (90% down the list), unfiltered and by provider.
func BenchmarkExecutionsPage(b *testing.B) {
	quiet := slog.New(slog.DiscardHandler)
	pool := pgtest.New(b)
	deep := url.QueryEscape(loadExecutions(b, pool, benchExecutions))
	_, _, js := natstest.Run(b)
	reg, err := registry.New(js, registry.Config{Logger: quiet}) // required, never read by the list
	require.NoError(b, err)
	h, err := ui.New(ui.Config{Registry: reg, Views: views.New(pool), Logger: quiet})
	require.NoError(b, err)

	for _, c := range []struct{ name, query string }{
		{"all", ""},
		{"status", "status=failed"},
		{"workflow", "workflow=workflow-7"},
		{"provider", "provider=provider-4"},
		{"blob", "blob=blob-4"},
		{"deep", "cursor=" + deep},
		{"deep_provider", "provider=provider-4&cursor=" + deep},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/ui/executions?"+c.query, nil))
				if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "/ui/executions/") {
					b.Fatal(w.Code, w.Body.String())
				}
			}
		})
	}
}
