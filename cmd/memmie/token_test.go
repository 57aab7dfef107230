package main

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/natsserver/natstest"
)

// TestServeWithAnAPITokenAndMetrics starts serve with --api-token: the commands that call the
// API get through with the token (flag or MEMMIE_API_TOKEN) and are refused without it, while
// /readyz and /metrics answer without one.
func TestServeWithAnAPITokenAndMetrics(t *testing.T) {
	srv, _, _ := natstest.Run(t)
	serve := startBackground(t, "serve", "--nats-url", srv.ClientURL(), "--definitions", "../../definitions",
		"--http-addr", "127.0.0.1:0", "--log-level", "warn", "--api-token", "t0k3n")
	apiURL := serve.ready(t)
	assert.Contains(t, serve.out.String(), "--api-token on the command line is visible", "a token on the command line is warned about")

	code, _, stderr := executeSplit(t, "run", "blob_summary", "--api-url", apiURL, "--input", blobInput)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "unauthorized: this memmie needs a token")

	code, stdout, stderr := executeSplit(t, "run", "blob_summary", "--api-url", apiURL, "--api-token", "t0k3n", "--input", blobInput, "--wait")
	require.Equal(t, 0, code, stderr)
	state := decodeState(t, stdout)
	assert.Equal(t, "completed", state["status"])
	id := state["execution_id"].(string)

	code, _, stderr = executeSplit(t, "executions", "show", id, "--api-url", apiURL, "--api-token", "wrong")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "unauthorized")

	t.Setenv("MEMMIE_API_TOKEN", "t0k3n")
	code, stdout, stderr = executeSplit(t, "executions", "show", id, "--api-url", apiURL)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "completed", decodeState(t, stdout)["status"])
	code, out := execute(t, "apply", "--api-url", apiURL, "../../definitions")
	assert.Equal(t, 0, code, out)

	get := func(path string) (int, string) {
		resp, err := http.Get(apiURL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	st, body := get("/readyz")
	assert.Equal(t, http.StatusOK, st, body)
	st, body = get("/metrics")
	require.Equal(t, http.StatusOK, st, body)
	assert.Regexp(t, `(?m)^memmie_consume_handled_total\{handler="orchestrator"\} [1-9]\d*$`, body)
	assert.Regexp(t, `(?m)^memmie_dispatcher_leader 1$`, body)
	assert.Contains(t, body, "# HELP memmie_orchestrator_occ_conflicts_total ")
	require.NoError(t, serve.stop(t))
}
