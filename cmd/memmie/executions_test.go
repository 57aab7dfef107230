package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
)

func TestExecutions(t *testing.T) {
	srv, _ := newRunAPI(t)

	code, out, errOut := executeSplit(t, "run", "fail", "--api-url", srv.URL, "--wait")
	require.Equal(t, 1, code, errOut)
	failed := decodeState(t, out)["execution_id"].(string)

	t.Run("show", func(t *testing.T) {
		code, out, errOut := executeSplit(t, "executions", "show", failed, "--api-url", srv.URL)
		require.Equal(t, 0, code, errOut)
		s := decodeState(t, out)
		assert.Equal(t, failed, s["execution_id"])
		assert.Equal(t, "failed", s["status"])
	})

	t.Run("history prints one event per line", func(t *testing.T) {
		code, out, errOut := executeSplit(t, "executions", "history", failed, "--api-url", srv.URL)
		require.Equal(t, 0, code, errOut)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		require.GreaterOrEqual(t, len(lines), 3, out)
		var types []events.Type
		for _, line := range lines {
			ev, err := events.Decode([]byte(line))
			require.NoError(t, err, line)
			assert.Equal(t, failed, ev.ExecutionID())
			types = append(types, ev.Type)
		}
		assert.Equal(t, events.TypeExecutionQueued, types[0])
		assert.Equal(t, events.TypeExecutionFailed, types[len(types)-1])

		// Pages of 2 print the same lines: history follows the next cursor.
		code, paged, errOut := executeSplit(t, "executions", "history", failed, "--page-size", "2", "--api-url", srv.URL)
		require.Equal(t, 0, code, errOut)
		assert.Equal(t, out, paged)
		code, _, errOut = executeSplit(t, "executions", "history", failed, "--page-size", "0", "--api-url", srv.URL)
		assert.Equal(t, 1, code)
		assert.Contains(t, errOut, "--page-size")
	})

	t.Run("retry", func(t *testing.T) {
		code, out, errOut := executeSplit(t, "executions", "retry", failed, "--api-url", srv.URL)
		require.Equal(t, 0, code, errOut)
		assert.Equal(t, "retry of "+failed+" requested\n", out)
		waitFor(t, "failed in run 2", func() bool {
			_, out, _ := executeSplit(t, "executions", "show", failed, "--api-url", srv.URL)
			s := decodeState(t, out)
			return s["run"] == 2.0 && s["status"] == "failed"
		})
	})

	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"cancel of an ended execution", []string{"cancel", failed}, "invalid_state"},
		{"show of an unknown execution", []string{"show", "0190aaaa-0000-7000-8000-000000000000"}, "not_found"},
		{"history of an unknown execution", []string{"history", "0190aaaa-0000-7000-8000-000000000000"}, "not_found"},
		{"retry of an unknown execution", []string{"retry", "0190aaaa-0000-7000-8000-000000000000"}, "not_found"},
		{"show needs an id", []string{"show"}, "accepts 1 arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := executeSplit(t, append(append([]string{"executions"}, tt.args...), "--api-url", srv.URL)...)
			assert.Equal(t, 1, code)
			assert.Contains(t, errOut, tt.msg)
		})
	}

	t.Run("list without a database names the fix", func(t *testing.T) {
		code, _, errOut := executeSplit(t, "executions", "list", "--api-url", srv.URL)
		assert.Equal(t, 1, code)
		assert.Contains(t, errOut, "no database configured")
		assert.Contains(t, errOut, "--database-url")
	})
}

func TestPrintJSONKeepsNumbers(t *testing.T) {
	var b strings.Builder
	require.NoError(t, printJSON(&b, json.RawMessage(`{"seed":9007199254740993}`)))
	assert.Equal(t, "{\n  \"seed\": 9007199254740993\n}\n", b.String())
}
