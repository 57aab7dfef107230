package ui_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/app/ui"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/app/views/viewstest"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/internal/registry"
)

// benchExecutions is how many rows the list benchmark loads into the executions projection.
const benchExecutions = 100_000

// BenchmarkExecutionsPage measures one page (DefaultPageSize rows) of /ui/executions, rendered,
// with 100k executions in the projection: unfiltered, by status, workflow, provider and blob,
// and deep in the cursor (90% down the list), unfiltered and by provider.
func BenchmarkExecutionsPage(b *testing.B) {
	quiet := slog.New(slog.DiscardHandler)
	pool := pgtest.New(b)
	deep := url.QueryEscape(viewstest.LoadExecutions(b, pool, benchExecutions))
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
