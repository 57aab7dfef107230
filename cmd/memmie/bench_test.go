package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/pgtest"
)

// TestBenchMeasuresEveryFigure runs memmie bench --json in small: every figure of the report is
// there and was measured (a rate above zero, ordered percentiles, a lag sampled), so that a
// phase that silently measures nothing fails. It asserts no speed.
func TestBenchMeasuresEveryFigure(t *testing.T) {
	out, profiles := filepath.Join(t.TempDir(), "bench.json"), t.TempDir()
	code, stdout, stderr := executeSplit(t, "bench", "--json", "--duration", "5s", "--executions", "200", "--loads", "50",
		"--latency-duration", "2s", "--serial", "20", "--ceiling-duration", "300ms", "--out", out,
		"--profile-dir", profiles, "--profile-every", "2s")
	require.Equal(t, 0, code, "stderr:\n%s", stderr)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
	file, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.JSONEq(t, stdout, string(file), "--out holds the report")
	for _, phase := range []string{"ceilings", "saturation", "drain", "projections", "rebuild", "latency", "blobs"} {
		assert.Contains(t, stderr, "  "+phase+" ", "progress of %s on stderr", phase)
	}

	positive := func(path string) float64 {
		t.Helper()
		v, ok := lookup(rep, path).(float64)
		if assert.True(t, ok, "%s is a number in the report", path) {
			assert.Greater(t, v, 0.0, path)
		}
		return v
	}
	for _, f := range []string{"js_async_publish_msgs_per_s", "js_sync_publish_msgs_per_s", "js_sync_publish_concurrent_msgs_per_s",
		"js_expect_publish_msgs_per_s", "js_expect_publish_concurrent_msgs_per_s", "pg_upsert_rows_per_s", "pg_copy_rows_per_s"} {
		positive("ceilings." + f)
	}

	completed := positive("saturation.completed")
	assert.Equal(t, completed, positive("saturation.started"), "every execution started ended")
	assert.Equal(t, 0.0, lookup(rep, "saturation.failed"))
	// Every window stores messages (the starts' at least); executions may all end after the
	// first or the last window of so short a run on a busy machine, but some end within it.
	positive("saturation.overall.executions_per_s")
	for _, w := range []string{"overall", "first", "last"} {
		execs, ok := lookup(rep, "saturation."+w+".executions_per_s").(float64)
		require.True(t, ok && execs >= 0, "saturation.%s.executions_per_s", w)
		steps, _ := lookup(rep, "saturation."+w+".steps_per_s").(float64)
		assert.InDelta(t, 3*execs, steps, 1e-6*execs, "three steps an execution")
		positive("saturation." + w + ".stored_msgs_per_s")
		positive("saturation." + w + ".async_ratio")
		assert.Greater(t, lookup(rep, "saturation."+w+".to_seconds"), lookup(rep, "saturation."+w+".from_seconds"), w)
	}

	for _, kind := range []string{"start_to_completed", "blob_to_last_delta"} {
		runs, ok := lookup(rep, "latency."+kind).([]any)
		require.True(t, ok, "latency.%s is a list", kind)
		require.Len(t, runs, 2, "one at a time, and at 50/s")
		for i, want := range []float64{0, 50} {
			run := runs[i].(map[string]any)
			assert.Equal(t, want, run["offered_per_s"], kind)
			assert.Greater(t, run["samples"], 0.0, kind)
			assert.Equal(t, 0.0, run["lost"], kind)
			p50, p95, p99, top := run["p50_ms"].(float64), run["p95_ms"].(float64), run["p99_ms"].(float64), run["max_ms"].(float64)
			assert.Greater(t, p50, 0.0, kind)
			assert.True(t, p50 <= p95 && p95 <= p99 && p99 <= top, "%s at %v/s: p50 %v ≤ p95 %v ≤ p99 %v ≤ max %v", kind, want, p50, p95, p99, top)
		}
	}

	lag, ok := lookup(rep, "projections.max_lag_seconds").(float64)
	assert.True(t, ok && lag >= 0, "projections.max_lag_seconds %v", lookup(rep, "projections.max_lag_seconds"))
	positive("projections.lag_samples")
	positive("projections.rebuild_events")
	positive("projections.rebuild_events_per_s")
	positive("projections.rebuild_vs_copy")

	for _, f := range []string{"peak_rss_bytes", "peak_heap_bytes", "cpu_seconds_per_1000_executions", "alloc_bytes_per_execution",
		"stored_bytes_per_execution", "peak_sampled_rss_bytes"} {
		positive("resources." + f)
	}
	memory, ok := lookup(rep, "resources.memory").([]any)
	require.True(t, ok, "resources.memory is a list")
	require.NotEmpty(t, memory)
	assert.Greater(t, memory[0].(map[string]any)["rss_bytes"], 0.0, "the resident set is sampled")

	// A CPU profile of every 2 s of the saturation run and its drain, and a heap profile at
	// the end of each, none empty.
	var cpu, heap int
	entries, err := os.ReadDir(profiles)
	require.NoError(t, err)
	for _, e := range entries {
		info, err := e.Info()
		require.NoError(t, err)
		assert.Positive(t, info.Size(), e.Name())
		switch {
		case strings.HasPrefix(e.Name(), "cpu-"):
			cpu++
		case strings.HasPrefix(e.Name(), "heap-"):
			heap++
		}
	}
	assert.GreaterOrEqual(t, cpu, 3, "5 s and its drain in spans of 2 s")
	assert.Equal(t, cpu, heap, "a heap profile at the end of each span")
}

// TestBenchTable: without --json the report is a table, with --skip leaving parts out.
func TestBenchTable(t *testing.T) {
	code, stdout, stderr := executeSplit(t, "bench", "--skip", "saturation,rebuild,blobs", "--loads", "", "--serial", "5",
		"--ceiling-duration", "100ms")
	require.Equal(t, 0, code, "stderr:\n%s", stderr)
	for _, want := range []string{"skipped: saturation, rebuild, blobs", "JetStream async publish", "Postgres COPY",
		"start to completed, one at a time"} {
		assert.Contains(t, stdout, want)
	}
	for _, not := range []string{"saturation (", "blob event to last delta", "rebuild of executions"} {
		assert.NotContains(t, stdout, not)
	}
}

// TestBenchRefusesBadFlags before it starts anything.
func TestBenchRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"--loads 100,x", "--loads"},
		{"--loads 0", "--loads"},
		{"--skip nothing", `unknown part "nothing"`},
		{"--steps 51", "Steps 51"},
		{"--cpu-profile cpu.pb.gz --profile-dir profiles", "exclude each other"},
	} {
		code, _, stderr := executeSplit(t, append([]string{"bench"}, strings.Fields(tc.args)...)...)
		assert.Equal(t, 1, code, tc.args)
		assert.Contains(t, stderr, tc.want, tc.args)
	}
}

// lookup returns the value at a dotted path of a decoded JSON object, nil when there is none.
func lookup(v any, path string) any {
	for key := range strings.SplitSeq(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[key]
	}
	return v
}

// skipAll are the flags of a bench that measures nothing: it starts its stack and stops.
var skipAll = []string{"bench", "--skip", "ceilings,saturation,rebuild,latency,blobs"}

// TestBenchKeepsOffOtherStores: a --data-dir that holds something else than a bench's stores
// and a database that holds projections are refused, and MEMMIE_DATA_DIR and
// MEMMIE_DATABASE_URL (dev's and serve's) are never read.
func TestBenchKeepsOffOtherStores(t *testing.T) {
	devDir := t.TempDir()
	writeFile(t, filepath.Join(devDir, "memmie.lock"), "4242\n")

	code, _, stderr := executeSplit(t, append(skipAll, "--data-dir", devDir)...)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "holds something other than a bench's stores")

	used := pgtest.URL(t)
	db, err := pgx.Connect(t.Context(), used)
	require.NoError(t, err)
	_, err = db.Exec(t.Context(), `INSERT INTO projection_checkpoints (projection, stream, last_seq) VALUES ('executions', 'MEMMIE_EXECUTIONS', 7)`)
	require.NoError(t, err)
	require.NoError(t, db.Close(t.Context()))
	code, _, stderr = executeSplit(t, append(skipAll, "--database-url", used)...)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "holds memmie's projections already")

	// From the environment neither is used: the bench runs on stores of its own.
	t.Setenv(envName("data-dir"), devDir)
	t.Setenv(envName("database-url"), used)
	code, _, stderr = executeSplit(t, skipAll...)
	require.Equal(t, 0, code, stderr)
	entries, err := os.ReadDir(devDir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "dev's folder untouched")

	// An empty database on the command line is used.
	code, _, stderr = executeSplit(t, append(skipAll, "--database-url", pgtest.URL(t))...)
	require.Equal(t, 0, code, stderr)
}
