package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/childproc"
	"github.com/memmie/memmie/internal/devlock"
	"github.com/memmie/memmie/internal/logbuf"
)

// These tests run the real binary, built once, as a subprocess: only a process of its own can
// be killed with SIGKILL.

var memmieBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if memmieBin.dir != "" {
		_ = os.RemoveAll(memmieBin.dir)
	}
	os.Exit(code)
}

// buildMemmie builds this package's binary into a temporary directory, once per test run.
func buildMemmie(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the binary with")
	}
	memmieBin.once.Do(func() {
		if memmieBin.dir, memmieBin.err = os.MkdirTemp("", "memmie-bin-"); memmieBin.err != nil {
			return
		}
		memmieBin.path = filepath.Join(memmieBin.dir, "memmie")
		out, err := exec.Command(goTool, "build", "-o", memmieBin.path, ".").CombinedOutput()
		if err != nil {
			memmieBin.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(t, memmieBin.err)
	return memmieBin.path
}

// devProcess is `memmie dev` running as a subprocess.
type devProcess struct {
	cmd     *exec.Cmd
	stdout  *logbuf.Buffer
	stderr  *logbuf.Buffer
	started time.Time
	exited  chan struct{}
}

func startDevProcess(t *testing.T, env []string, args ...string) *devProcess {
	t.Helper()
	p := &devProcess{stdout: &logbuf.Buffer{}, stderr: &logbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(buildMemmie(t), append([]string{"dev"}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.SysProcAttr = childproc.DieWithParent() // a test killed by its timeout leaves no dev behind
	p.started = time.Now()
	require.NoError(t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.kill(t) })
	return p
}

func (p *devProcess) pid() int { return p.cmd.Process.Pid }

// ready waits for the "ready" line and returns the HTTP URL printed before it, and how long the
// start took.
func (p *devProcess) ready(t *testing.T) (string, time.Duration) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if out := p.stdout.String(); strings.Contains(out, "ready; Ctrl-C stops") {
			m := httpURLLine.FindStringSubmatch(out)
			require.NotNil(t, m, out)
			return m[1], time.Since(p.started)
		}
		select {
		case <-p.exited:
			t.Fatalf("memmie dev exited before it was ready (%v)\nstdout:\n%s\nstderr:\n%s",
				p.cmd.ProcessState, p.stdout, p.stderr)
		case <-deadline:
			t.Fatalf("memmie dev not ready within 60s\nstdout:\n%s\nstderr:\n%s", p.stdout, p.stderr)
		case <-tick.C:
		}
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (p *devProcess) kill(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("pid %d still runs 10s after SIGKILL", p.pid())
	}
}

// exitCode waits for the process to exit by itself.
func (p *devProcess) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("memmie dev still runs after %s\nstdout:\n%s\nstderr:\n%s", within, p.stdout, p.stderr)
		return 0
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// flakyService answers every call with {"ok": true}, except the first call of each
// Idempotency-Key whose body asks for {"fail_first": true}: that one gets a 503, which the
// engine retries after the step's backoff.
type flakyService struct {
	*httptest.Server
	mu     sync.Mutex
	calls  map[string]int // per Idempotency-Key
	oks    map[string]int // 200s per Idempotency-Key
	failed int            // 503s
}

func newFlakyService(t *testing.T) *flakyService {
	s := &flakyService{calls: map[string]int{}, oks: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			FailFirst bool `json:"fail_first"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		key := r.Header.Get("Idempotency-Key")
		s.mu.Lock()
		n := s.calls[key]
		s.calls[key]++
		fail := body.FailFirst && n == 0
		if fail {
			s.failed++
		} else {
			s.oks[key]++
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error": "busy"}`))
			return
		}
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *flakyService) failures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// counts returns the calls made, the keys called and the 503s answered.
func (s *flakyService) counts() (calls, keys, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.calls {
		calls += n
	}
	return calls, len(s.calls), s.failed
}

func (s *flakyService) successes(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oks[key]
}

const recoverWorkflow = `id: recover
steps:
  - id: first
    type: api_call
    service: svc
    endpoint: /first
  - id: flaky
    type: api_call
    service: svc
    endpoint: /flaky
    input_map: {fail_first: $.input.fail_first}
    retry: {max_attempts: 3, backoff_ms: 3000, jitter: 0}
  - id: last
    type: api_call
    service: svc
    endpoint: /last
`

var recoverSteps = []string{"first", "flaky", "last"}

type execView struct {
	ID     string `json:"execution_id"`
	Status string `json:"status"`
	Steps  []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	} `json:"steps"`
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	status, b := getBody(t, url)
	require.Equal(t, http.StatusOK, status, "GET %s: %s", url, b)
	require.NoError(t, json.Unmarshal([]byte(b), v), "GET %s: %s", url, b)
}

func startExecution(t *testing.T, apiURL string, input map[string]any) string {
	t.Helper()
	body, err := json.Marshal(map[string]any{"workflow_id": "recover", "input": input})
	require.NoError(t, err)
	resp, err := http.Post(apiURL+"/v1/executions", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var r struct {
		ExecutionID string `json:"execution_id"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.NotEmpty(t, r.ExecutionID)
	return r.ExecutionID
}

// waitWithin polls cond until it holds or the deadline passes; then it fails the test with
// what cond last said and what the dev processes printed.
func waitWithin(t *testing.T, within time.Duration, what string, cond func() (bool, string), devs ...*devProcess) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b := strings.Builder{}
			b.WriteString("\n" + state)
			for _, p := range devs {
				fmt.Fprintf(&b, "\npid %d stdout:\n%s\npid %d stderr:\n%s", p.pid(), p.stdout, p.pid(), p.stderr)
			}
			t.Fatalf("%s: not within %s%s", what, within, b.String())
		}
		<-tick.C
	}
}

// TestDevRecoversFromKill9 kills memmie dev with SIGKILL while executions are queued, running
// and waiting for a retry's backoff, starts it again on the same data directory and ports,
// and expects every execution to complete once, with one result per step and attempt.
func TestDevRecoversFromKill9(t *testing.T) {
	svc := newFlakyService(t)
	defs := t.TempDir()
	writeFile(t, filepath.Join(defs, "workflows", "recover.yaml"), recoverWorkflow)
	dataDir := devDataDir(t)
	env := []string{"MEMMIE_SERVICE_SVC_URL=" + svc.URL}
	args := []string{"--data-dir", dataDir, "--definitions", defs, "--http-addr", freeAddr(t),
		"--nats-listen", freeAddr(t), "--max-running", "3"}

	first := startDevProcess(t, env, args...)
	apiURL, took := first.ready(t)
	t.Logf("first start: ready in %s", took.Round(time.Millisecond))

	const n = 8
	ids := make([]string, n)
	failFirst := map[string]bool{}
	for i := range ids {
		ids[i] = startExecution(t, apiURL, map[string]any{"n": i, "fail_first": i%2 == 0})
		failFirst[ids[i]] = i%2 == 0
	}

	// Kill once a retry is pending (its backoff is 3s) and some executions have not ended.
	var atKill map[string]int
	waitWithin(t, 30*time.Second, "a retry pending while executions remain", func() (bool, string) {
		if svc.failures() == 0 {
			return false, "no call has failed yet"
		}
		atKill = map[string]int{}
		for _, id := range ids {
			var v execView
			getJSON(t, apiURL+"/v1/executions/"+id, &v)
			atKill[v.Status]++
			for _, s := range v.Steps {
				if s.Status == "retry_scheduled" {
					atKill["step retry_scheduled"]++
				}
			}
		}
		return atKill["step retry_scheduled"] > 0 && atKill["completed"] < n, fmt.Sprint(atKill)
	}, first)
	first.kill(t)
	killedAt := time.Now()
	callsAtKill, _, _ := svc.counts()
	t.Logf("killed with SIGKILL after %d calls; executions at the kill: %v", callsAtKill, atKill)
	pid, err := devlock.ReadPID(dataDir)
	require.NoError(t, err)
	require.Equal(t, first.pid(), pid, "the killed dev's pid is left in the lock file")

	second := startDevProcess(t, env, args...)
	apiURL2, took := second.ready(t)
	t.Logf("restart after kill -9: ready in %s", took.Round(time.Millisecond))
	assert.Equal(t, apiURL, apiURL2, "the same address serves again")
	assert.Contains(t, second.stdout.String(), fmt.Sprintf("recovering from an unclean stop (pid %d)", first.pid()))
	pid, err = devlock.ReadPID(dataDir)
	require.NoError(t, err)
	assert.Equal(t, second.pid(), pid)

	waitWithin(t, 90*time.Second, "every execution completes", func() (bool, string) {
		for _, id := range ids {
			var v execView
			getJSON(t, apiURL2+"/v1/executions/"+id, &v)
			if v.Status != "completed" {
				return false, fmt.Sprintf("execution %s is %s, steps %+v", id, v.Status, v.Steps)
			}
		}
		return true, ""
	}, second)
	t.Logf("all %d executions completed %s after the kill", n, time.Since(killedAt).Round(time.Millisecond))
	calls, keys, failed := svc.counts()
	t.Logf("the service saw %d calls of %d keys, %d of them answered 503; %d repeated a call already answered 200",
		calls, keys, failed, calls-keys-failed)

	for _, id := range ids {
		var list struct {
			Events []struct {
				ID   string      `json:"id"`
				Type events.Type `json:"type"`
				Data struct {
					Run     int    `json:"run"`
					StepID  string `json:"step_id"`
					Attempt int    `json:"attempt"`
				} `json:"data"`
			} `json:"events"`
		}
		getJSON(t, apiURL2+"/v1/executions/"+id+"/events?limit=1000", &list)
		ends, seen := 0, map[string]bool{}
		results := map[string][]events.Type{} // per run/step/attempt
		succeeded := map[string]int{}         // per step
		for _, ev := range list.Events {
			assert.False(t, seen[ev.ID], "event %s (%s) of %s is stored once", ev.ID, ev.Type, id)
			seen[ev.ID] = true
			switch ev.Type {
			case events.TypeExecutionCompleted, events.TypeExecutionFailed, events.TypeExecutionCancelled:
				ends++
			case events.TypeStepSucceeded, events.TypeStepFailed, events.TypeStepRetryScheduled:
				key := fmt.Sprintf("%d/%s/%d", ev.Data.Run, ev.Data.StepID, ev.Data.Attempt)
				results[key] = append(results[key], ev.Type)
				if ev.Type == events.TypeStepSucceeded {
					succeeded[ev.Data.StepID]++
				}
			}
		}
		assert.Equal(t, 1, ends, "execution %s has one terminal event", id)
		for key, types := range results {
			assert.Len(t, types, 1, "execution %s attempt %s has one result: %v", id, key, types)
		}
		for _, step := range recoverSteps {
			assert.Equal(t, 1, succeeded[step], "execution %s step %s succeeded once", id, step)
			// At least once: a call whose report the kill lost is made again, with the same key.
			assert.GreaterOrEqual(t, svc.successes(id+"/"+step), 1, "execution %s step %s was called", id, step)
		}
		// A failing first call of flaky is retried after its backoff, unless the kill lost its
		// report: then the same attempt is called again, and succeeds.
		if failFirst[id] {
			assert.Contains(t, []int{len(recoverSteps), len(recoverSteps) + 1}, len(results), "execution %s: %v", id, results)
		} else {
			assert.Len(t, results, len(recoverSteps), "execution %s: one attempt per step: %v", id, results)
		}
	}
}

// TestDevRefusesADataDirInUse starts a second dev on the data directory of a running one: it
// fails at once, naming the first one's pid, and the first one keeps serving.
func TestDevRefusesADataDirInUse(t *testing.T) {
	dataDir := devDataDir(t)
	noDefs := t.TempDir() // no definitions
	first := startDevProcess(t, nil, "--data-dir", dataDir, "--definitions", noDefs,
		"--http-addr", freeAddr(t), "--nats-listen", freeAddr(t))
	apiURL, _ := first.ready(t)

	second := startDevProcess(t, nil, "--data-dir", dataDir, "--definitions", noDefs,
		"--http-addr", freeAddr(t), "--nats-listen", freeAddr(t))
	assert.Equal(t, 1, second.exitCode(t, 30*time.Second))
	assert.Contains(t, second.stderr.String(),
		fmt.Sprintf("data dir %s is in use by another memmie dev (pid %d)", dataDir, first.pid()))
	assert.NotContains(t, second.stdout.String(), "NATS:", "the second dev started nothing")

	resp, err := http.Get(apiURL + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	pid, err := devlock.ReadPID(dataDir)
	require.NoError(t, err)
	assert.Equal(t, first.pid(), pid)
}
