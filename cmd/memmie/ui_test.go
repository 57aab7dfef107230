package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/trigger"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
)

// uiSaga reserves, charges and ships; shipping fails (twice, with a backoff between), so the
// charge and the reservation are compensated, newest first.
const uiSaga = `id: ui_saga
name: UI saga
steps:
  - id: reserve
    type: api_call
    service: shop
    endpoint: /reserve
    compensation: {service: shop, endpoint: /reserve/undo}
  - id: charge
    type: api_call
    service: shop
    endpoint: /charge
    compensation: {service: shop, endpoint: /charge/undo}
  - id: ship
    type: api_call
    service: shop
    endpoint: /ship
    retry: {max_attempts: 2, backoff_ms: 300, jitter: 0}
`

// uiSlow waits on a call the test holds, to be cancelled from its page.
const uiSlow = `id: ui_slow
steps:
  - id: wait
    type: api_call
    service: shop
    endpoint: /slow
    timeout_seconds: 120
`

// chromium returns the path of Chromium's binary, or fails the test with the fix.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the web UI's browser test needs Chromium: apt-get install chromium (Debian's package; .ci/run installs it)")
	return ""
}

// browser starts a headless Chromium of the test's own and returns its chromedp context.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium")), chromedp.WindowSize(1400, 1000),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	// The first run starts the browser, which lives as long as ctx.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")), "start Chromium")
	return ctx
}

// page drives one tab: its actions each bounded, its waits polled with a deadline.
type page struct {
	t         *testing.T
	ctx       context.Context
	artifacts string
	serve     *background
}

func (p *page) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
	defer cancel()
	require.NoError(p.t, chromedp.Do(ctx, actions...))
}

func eval[T any](p *page, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	require.NoError(p.t, err, js)
	return v
}

// waitText waits until js (an expression of a string) evaluates to one that contains want,
// and returns it.
func (p *page) waitText(what, js, want string) string {
	p.t.Helper()
	deadline := time.Now().Add(e2eWait)
	for {
		got := eval[string](p, js)
		if strings.Contains(got, want) {
			return got
		}
		if time.Now().After(deadline) {
			html := eval[string](p, "document.body.innerText")
			p.t.Fatalf("%s: want %q in %q within %s\npage:\n%s\nserve:\n%s", what, want, got, e2eWait, html, p.serve.out.String())
		}
		time.Sleep(100 * time.Millisecond) // polling the page, not waiting for a result
	}
}

// waitLoaded is waitText on a page that is not live: it loads url again at each poll.
func (p *page) waitLoaded(url, what, js string, ok func(string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(e2eWait)
	for {
		p.do(chromedp.Navigate(url))
		got := eval[string](p, js)
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: not within %s (last %q)\nserve:\n%s", what, e2eWait, got, p.serve.out.String())
		}
		time.Sleep(200 * time.Millisecond) // polling the page, not waiting for a result
	}
}

// screenshot saves the whole page as <artifacts>/<name>.png and returns its path.
func (p *page) screenshot(name string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(p.t, err)
	path := filepath.Join(p.artifacts, name+".png")
	require.NoError(p.t, os.WriteFile(path, png, 0o644))
	return path
}

// TestWebUI drives the web UI in headless Chromium against serve on embedded NATS and
// Postgres, with an API token: a saga fails and compensates, a blob is summarized, a command
// is dead-lettered; the pages show them live, the retry button starts run 2, the blob's
// lineage links to its execution, a dead letter is redriven, the queue shows an execution
// running and its page's cancel button cancels it. Screenshots go to
// MEMMIE_UI_ARTIFACTS (a temporary folder by default); with MEMMIE_UI_UPDATE_DOCS=1 the
// execution page's is written over the README's, docs/ui-execution.png.
func TestWebUI(t *testing.T) {
	ctx := browser(t)
	artifacts := os.Getenv("MEMMIE_UI_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(artifacts, 0o755))

	release := make(chan struct{})
	var (
		shipOK atomic.Bool
		mu     sync.Mutex
		calls  []string
	)
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		if r.URL.Path == "/ship" && !shipOK.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"error": "warehouse down"}`)
			return
		}
		fmt.Fprintf(w, `{"ok": true, "path": %q}`, r.URL.Path)
	}))
	t.Cleanup(shop.Close)
	var releaseOnce sync.Once
	releaseSlow := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseSlow) // before shop.Close, which waits for the calls

	const token = "ui-s3cret"
	dbURL := pgtest.URL(t)
	srv, nc, _ := natstest.Run(t)
	t.Setenv("MEMMIE_API_TOKEN", token)
	defs := shippedDefinitions(t, map[string]string{"workflows/ui-saga.yaml": uiSaga, "workflows/ui-slow.yaml": uiSlow})
	serve := startBackground(t, "serve", "--nats-url", srv.ClientURL(), "--http-addr", "127.0.0.1:0",
		"--database-url", dbURL, "--log-level", "warn", "--definitions", defs,
		"--services", servicesFile(t, map[string]string{"shop": shop.URL}))
	apiURL := serve.ready(t)
	p := &page{t: t, ctx: ctx, artifacts: artifacts, serve: serve}

	// Without the token the UI answers 401; with ?token= once, the cookie lets the browser in.
	resp, err := http.Get(apiURL + "/ui/executions")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the UI needs the token")
	p.do(chromedp.Navigate(apiURL + "/ui/?token=" + token))
	loc, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	assert.Equal(t, apiURL+"/ui/executions", loc, "the token is taken out of the address")
	p.waitText("the empty list", "document.body.innerText", "no executions")

	// The list is open while the executions start: it shows them live.
	start := func(workflow string) string {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"workflow_id": workflow, "input": map[string]any{"order": "o-1"}})
		req, err := http.NewRequest(http.MethodPost, apiURL+"/v1/executions", bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var started struct {
			ExecutionID string `json:"execution_id"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&started))
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		return started.ExecutionID
	}
	sagaID := start("ui_saga")

	const (
		blobID = "3a7d9c1e-5b2f-4e8a-9c6d-1f0e2d3c4b5a"
		userID = "0b7c7e58-7a8f-4d6c-9a0a-0a4c1d2e3f40"
		msgID  = "ui-blob-1"
	)
	pub := nats.NewMsg("memmie.blobs." + blobID + ".created")
	pub.Data = []byte(`{"blob_id": "` + blobID + `", "user_id": "` + userID + `", "content": "hello", "metadata": {"type": "note"}}`)
	pub.Header.Set("Nats-Msg-Id", msgID)
	require.NoError(t, nc.PublishMsg(pub))
	summaryID := trigger.ExecutionID(blobID, msgID, "blob-summary", "blob_summary")

	rows := `Array.from(document.querySelectorAll("tr.execution")).map(r => r.dataset.id + "=" + r.dataset.status).join(" ")`
	p.waitText("the saga failed, live in the list", rows, sagaID+"=failed")
	p.waitText("the blob's execution completed, live in the list", rows, summaryID+"=completed")
	refreshed := eval[string](p, `document.getElementById("executions").dataset.refreshed || "0"`)
	assert.NotEqual(t, "0", refreshed, "the rows came by the live stream, not a reload")
	p.screenshot("executions")

	// Filters: by workflow, by blob.
	p.do(chromedp.Navigate(apiURL + "/ui/executions?workflow=ui_saga"))
	assert.Equal(t, sagaID+"=failed", eval[string](p, rows))
	p.do(chromedp.Navigate(apiURL + "/ui/executions?blob=" + blobID + "&provider=blob-summary"))
	assert.Equal(t, summaryID+"=completed", eval[string](p, rows))

	// The failed execution: its timeline in order, the failed attempts, the backoff, the
	// compensations newest first.
	p.do(chromedp.Navigate(apiURL + "/ui/executions/" + sagaID))
	lanes := `Array.from(document.querySelectorAll("#timeline .lane")).map(l => l.dataset.kind + ":" + l.dataset.step + "#" + l.dataset.attempt + ":" + l.dataset.status).join(" ")`
	got := p.waitText("the compensations on the timeline", lanes, "compensation:reserve")
	kinds := strings.Fields(got)
	var order []string
	for _, k := range kinds {
		kind, rest, _ := strings.Cut(k, ":")
		step, _, _ := strings.Cut(rest, ":")
		order = append(order, kind+":"+step)
	}
	assert.Equal(t, []string{"attempt:reserve#1", "attempt:charge#1", "attempt:ship#1", "backoff:ship#2", "attempt:ship#2",
		"compensation:charge#1", "compensation:reserve#1"}, order, "the timeline: %s", got)
	assert.Contains(t, got, "attempt:ship#1:retry_scheduled", "ship's first attempt failed and was retried")
	assert.Contains(t, got, "attempt:ship#2:failed", "ship's last attempt failed")
	assert.Equal(t, "failed", eval[string](p, `document.getElementById("status").innerText`))
	assert.Contains(t, eval[string](p, `document.getElementById("steps").innerText`), "warehouse down", "the step's error")
	assert.Contains(t, eval[string](p, `document.getElementById("history").innerText`), `"specversion": "1.0"`, "the CloudEvents envelopes")
	p.screenshot("execution-failed")

	// Retry: run 2 starts from the failed step, and completes, live on the page.
	shipOK.Store(true)
	p.do(chromedp.Click(chromedp.CSS("#retry")))
	p.waitText("the retry's notice", `(document.getElementById("notice") || {innerText: ""}).innerText`, "retry requested")
	p.waitText("run 2", `document.getElementById("run").innerText`, "2")
	p.waitText("run 2 completed, live", `document.getElementById("status").innerText`, "completed")
	run2 := `Array.from(document.querySelectorAll('#timeline .lane[data-run="2"]')).map(l => l.dataset.kind + ":" + l.dataset.step + ":" + l.dataset.status).join(" ")`
	p.waitText("run 2's ship on the timeline", run2, "attempt:ship:succeeded")
	assert.Equal(t, "attempt:reserve:succeeded attempt:charge:succeeded attempt:ship:succeeded", eval[string](p, run2),
		"run 2 runs again from the failed step and the compensated ones before it")
	p.screenshot("execution")
	// The README's: the top of the page (the whole one holds the raw history too), kept with
	// the test's and, when asked, written over docs/ui-execution.png.
	top, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(artifacts, "execution-top.png"), top, 0o644))
	if os.Getenv("MEMMIE_UI_UPDATE_DOCS") == "1" {
		require.NoError(t, os.WriteFile("../../docs/ui-execution.png", top, 0o644))
	}

	// The blob: versions 1 and 2, the delta's lineage linked to its execution.
	p.do(chromedp.Navigate(apiURL + "/ui/blobs/" + blobID))
	versions := `Array.from(document.querySelectorAll("#versions tr.version")).map(r => r.dataset.version).join(" ")`
	p.waitText("the blob's versions", versions, "1 2")
	href := eval[string](p, `document.querySelector('#versions tr.version[data-version="2"] a.lineage').getAttribute("href")`)
	assert.Equal(t, "/ui/executions/"+summaryID, href, "the lineage of version 2")
	assert.Contains(t, eval[string](p, `document.getElementById("document").innerText`), "summary", "the document at the last version")
	p.do(chromedp.Navigate(apiURL + "/ui/blobs/" + blobID + "?from=1&to=2"))
	assert.Contains(t, eval[string](p, `document.getElementById("diff").innerText`), "/metadata/summary", "the diff from 1 to 2")
	p.screenshot("blob")
	p.do(chromedp.Click(chromedp.CSS(`#versions tr.version[data-version="2"] a.lineage`)))
	p.waitText("the lineage's execution", `(document.querySelector("h1") || {innerText: ""}).innerText`, summaryID)

	// A dead letter, redriven from its page.
	const execution = "0d9c8b7a-6f5e-4d3c-9b2a-1f0e9d8c7b6a"
	require.NoError(t, nc.PublishMsg(&nats.Msg{Subject: events.InboxSubject(execution), Data: []byte("not an event"),
		Header: nats.Header{"Nats-Msg-Id": {"ui-poison-1"}}}))
	dls := `Array.from(document.querySelectorAll("tr.deadletter")).map(r => r.dataset.id).join(" ")`
	nonEmpty := func(s string) bool { return strings.TrimSpace(s) != "" }
	dlID := p.waitLoaded(apiURL+"/ui/deadletters", "the dead letter listed", dls, nonEmpty)
	p.screenshot("deadletters")
	p.do(chromedp.Navigate(apiURL + "/ui/deadletters/" + dlID))
	assert.Contains(t, eval[string](p, `document.getElementById("body").innerText`), "not an event")
	assert.Contains(t, eval[string](p, `document.getElementById("reason").innerText`), "decode")
	p.screenshot("deadletter")
	p.do(chromedp.Click(chromedp.CSS("#redrive")))
	p.waitText("the redrive's notice", `(document.getElementById("notice") || {innerText: ""}).innerText`, "redriven: "+dlID)
	redriven := fmt.Sprintf(`(document.querySelector('tr.deadletter[data-id="%s"] .redriven') || {innerText: ""}).innerText`, dlID)
	p.waitLoaded(apiURL+"/ui/deadletters", "the list shows when it was redriven", redriven, nonEmpty)

	// The queue, with one execution running; cancelled from its page.
	slowID := start("ui_slow")
	p.waitLoaded(apiURL+"/ui/queue", "the slow execution running on the queue page", `document.getElementById("queue").innerText + " " + document.getElementById("running").innerText`,
		func(s string) bool {
			return strings.Contains(s, slowID) && strings.Contains(s, "running: 1 of at most")
		})
	p.screenshot("queue")
	p.do(chromedp.Navigate(apiURL + "/ui/executions/" + slowID))
	p.waitText("the slow execution's call", `document.getElementById("timeline").innerText`, "wait attempt 1")
	p.do(chromedp.SendKeys(chromedp.CSS(`input[name="reason"]`), "changed my mind"), chromedp.Click(chromedp.CSS("#cancel")))
	p.waitText("the cancel's notice", `(document.getElementById("notice") || {innerText: ""}).innerText`, "cancel requested")
	releaseSlow()
	p.waitText("cancelled, live", `document.getElementById("status").innerText`, "cancelled")

	p.do(chromedp.Navigate(apiURL + "/ui/definitions"))
	assert.Contains(t, eval[string](p, "document.body.innerText"), "ui_saga")
	p.screenshot("definitions")
	t.Logf("screenshots in %s", artifacts)
}
