package api_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/app/views/viewstest"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/internal/registry"
)

// benchExecutions is how many rows the list benchmarks load into the executions projection.
const benchExecutions = 100_000

// BenchmarkListExecutions measures one page (the default limit) of GET /v1/executions with
// 100k executions in the projection: unfiltered, by status, by workflow, and deep in the
// cursor (90% down the list), unfiltered and by status; by provider and by blob.
func BenchmarkListExecutions(b *testing.B) {
	quiet := slog.New(slog.DiscardHandler)
	pool := pgtest.New(b)
	deep := viewstest.LoadExecutions(b, pool, benchExecutions)
	_, _, js := natstest.Run(b)
	reg, err := registry.New(js, registry.Config{Logger: quiet}) // required, never read by the list
	require.NoError(b, err)
	h, err := api.New(api.Config{Registry: reg, Views: views.New(pool), Logger: quiet})
	require.NoError(b, err)

	for _, c := range []struct{ name, query string }{
		{"all", ""},
		{"status", "status=failed"},
		{"workflow", "workflow_id=workflow-7"},
		{"provider", "provider_id=provider-4"},
		{"blob", "blob_id=blob-1234"},
		{"deep", "cursor=" + url.QueryEscape(deep)},
		{"deep_status", "status=failed&cursor=" + url.QueryEscape(deep)},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/executions?"+c.query, nil))
				if w.Code != http.StatusOK {
					b.Fatal(w.Code, w.Body.String())
				}
			}
		})
	}
}
