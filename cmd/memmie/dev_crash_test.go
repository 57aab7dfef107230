package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
)

// crashService answers every call after 6 seconds and counts the calls per Idempotency-Key,
// and those in progress.
type crashService struct {
	*httptest.Server
	mu      sync.Mutex
	calls   map[string]int
	running int
}

func newCrashService(t *testing.T, took time.Duration) *crashService {
	s := &crashService{calls: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls[r.Header.Get("Idempotency-Key")]++
		s.running++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.running--
			s.mu.Unlock()
		}()
		select {
		case <-time.After(took): // the service's work
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *crashService) state() (running int, calls map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	calls = map[string]int{}
	for k, n := range s.calls {
		calls[k] = n
	}
	return s.running, calls
}

// One attempt: a timed-out attempt fails the execution.
const slowWorkflow = `id: slow
steps:
  - id: call
    type: api_call
    service: svc
    endpoint: /slow
    timeout_seconds: 20
    retry: {max_attempts: 1}
`

func startWorkflow(t *testing.T, apiURL, workflowID string) string {
	t.Helper()
	body, err := json.Marshal(map[string]any{"workflow_id": workflowID})
	require.NoError(t, err)
	resp, err := http.Post(apiURL+"/v1/executions", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var r struct {
		ExecutionID string `json:"execution_id"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	return r.ExecutionID
}

// TestDevCrashResumesCallsInTime kills memmie dev with SIGKILL while six 6-second calls of a
// step with a 20-second timeout run, and starts it again on the same data directory: the
// calls are made again well within the attempt's deadline (the runner's short AckWait, kept
// alive by InProgress while a call runs), so every execution completes on its first and only
// attempt. (Before, the redelivery waited for a 30 s AckWait, and all six failed with "no
// report before the attempt's deadline".)
func TestDevCrashResumesCallsInTime(t *testing.T) {
	svc := newCrashService(t, 6*time.Second)
	defs := t.TempDir()
	writeFile(t, filepath.Join(defs, "workflows", "slow.yaml"), slowWorkflow)
	dataDir := devDataDir(t)
	env := []string{"MEMMIE_SERVICE_SVC_URL=" + svc.URL}
	args := []string{"--data-dir", dataDir, "--definitions", defs, "--http-addr", freeAddr(t), "--nats-listen", freeAddr(t)}

	first := startDevProcess(t, env, args...)
	apiURL, _ := first.ready(t)
	const n = 6
	ids := make([]string, n)
	for i := range ids {
		ids[i] = startWorkflow(t, apiURL, "slow")
	}
	waitWithin(t, 30*time.Second, "six calls in progress", func() (bool, string) {
		running, _ := svc.state()
		return running == n, fmt.Sprintf("%d calls in progress", running)
	}, first)
	// Past the first InProgress, so that the deliveries are on disk and the restart waits
	// for AckWait, as it would after a longer call.
	<-time.After(2 * time.Second)
	first.kill(t)
	killedAt := time.Now()

	second := startDevProcess(t, env, args...)
	apiURL2, took := second.ready(t)
	t.Logf("restart after kill -9: ready in %s", took.Round(time.Millisecond))

	waitWithin(t, 60*time.Second, "every execution ends", func() (bool, string) {
		for _, id := range ids {
			var v execView
			getJSON(t, apiURL2+"/v1/executions/"+id, &v)
			if v.Status != "completed" && v.Status != "failed" {
				return false, fmt.Sprintf("execution %s is %s", id, v.Status)
			}
		}
		return true, ""
	}, second)
	t.Logf("all %d executions ended %s after the kill", n, time.Since(killedAt).Round(time.Millisecond))
	_, calls := svc.state()
	for _, id := range ids {
		var v execView
		getJSON(t, apiURL2+"/v1/executions/"+id, &v)
		assert.Equal(t, "completed", v.Status, "execution %s", id)
		assert.GreaterOrEqual(t, calls[id+"/call"], 2, "execution %s: the call cut short by the kill is made again", id)

		var list struct {
			Events []struct {
				Type events.Type `json:"type"`
				Data struct {
					Attempt int `json:"attempt"`
				} `json:"data"`
			} `json:"events"`
		}
		getJSON(t, apiURL2+"/v1/executions/"+id+"/events", &list)
		succeeded := 0
		for _, ev := range list.Events {
			if ev.Type == events.TypeStepSucceeded {
				succeeded++
				assert.Equal(t, 1, ev.Data.Attempt, "execution %s: the crash used up no attempt", id)
			}
			assert.NotEqual(t, events.TypeStepFailed, ev.Type, "execution %s", id)
		}
		assert.Equal(t, 1, succeeded, "execution %s", id)
	}
}
