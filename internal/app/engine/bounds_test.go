package engine_test

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/logbuf"
)

// TestHistoryTooLarge: steps whose answers near the runner's response limit take the history
// to execution.MaxHistoryBytes (10 MiB) before the workflow's last step. The run stops there,
// undoes its first step and fails with history_too_large; the steps after the bound never run.
func TestHistoryTooLarge(t *testing.T) {
	const steps = 30 // 30 answers of 240 kB, each in a report and a result: some 14 MB
	text := strings.Repeat("x", 240_000)
	svc := newService(t, func(c call, _ int) (int, any) {
		if c.Method == "DELETE" {
			return 204, nil
		}
		return 200, map[string]any{"text": text}
	})
	logs := &logbuf.Buffer{}
	h := newHarness(t, map[string]string{"svc": svc.URL}, func(c *engine.Config) {
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	var wf strings.Builder
	wf.WriteString("id: big_answers\ntimeout_seconds: 600\nsteps:\n")
	for i := range steps {
		fmt.Fprintf(&wf, "  - {id: s%d, type: api_call, service: svc, endpoint: /s%d", i, i)
		if i == 0 {
			wf.WriteString(", compensation: {service: svc, endpoint: /undo, method: DELETE}")
		}
		wf.WriteString("}\n")
	}
	h.register(wf.String())
	id := h.start("big_answers", map[string]any{})

	// Poll the service, not the state: every read of the state folds megabytes.
	deadline := time.Now().Add(2 * time.Minute)
	for !slices.Contains(svc.paths(), "DELETE /undo") && len(svc.Calls()) < steps {
		require.True(t, time.Now().Before(deadline), "no compensation nor every step within 2m: %v", svc.paths())
		time.Sleep(50 * time.Millisecond)
	}
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusFailed, s.Status, "error: %+v", s.Error)
	require.NotNil(t, s.Error)
	assert.Equal(t, execution.CodeHistoryTooLarge, s.Error.Code)
	assert.Contains(t, s.Error.Message, fmt.Sprintf("(limit %d)", execution.MaxHistoryBytes))
	assert.False(t, s.Retryable)
	assert.GreaterOrEqual(t, s.History().Bytes, int64(execution.MaxHistoryBytes))

	calls := svc.paths()
	assert.Equal(t, "DELETE /undo", calls[len(calls)-1], "the first step is undone last")
	assert.Less(t, len(calls)-1, steps, "the steps after the bound never ran: %v", calls)
	assert.Greater(t, len(calls)-1, 15, "10 MiB takes some 22 answers")

	assert.Equal(t, 1, strings.Count(logs.String(), "execution history past half its bounds"),
		"the orchestrator warns once, at 5 MiB")

	types := h.types(id)
	assert.Equal(t, events.TypeExecutionFailed, types[len(types)-1])
	assert.Contains(t, types, events.TypeExecutionCompensating)
}
