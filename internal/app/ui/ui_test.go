package ui

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/internal/registry"
)

func newUI(t *testing.T, token string) *UI {
	t.Helper()
	_, _, js := natstest.Run(t)
	reg, err := registry.New(js, registry.Config{})
	require.NoError(t, err)
	u, err := New(Config{Registry: reg, Token: token})
	require.NoError(t, err)
	return u
}

// TestToken: without the token a page is 401; ?token= sets an HttpOnly cookie and redirects
// to the address without it; the cookie, or the API's bearer header, lets a request in; a
// wrong token does not.
func TestToken(t *testing.T) {
	u := newUI(t, "s3cret")
	get := func(target string, with func(*http.Request)) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		if with != nil {
			with(r)
		}
		w := httptest.NewRecorder()
		u.ServeHTTP(w, r)
		return w
	}
	assert.Equal(t, http.StatusUnauthorized, get("/ui/definitions", nil).Code)
	assert.Equal(t, http.StatusUnauthorized, get("/ui/definitions?token=wrong", nil).Code)

	w := get("/ui/definitions?token=s3cret&x=1", nil)
	require.Equal(t, http.StatusSeeOther, w.Code)
	assert.Equal(t, "/ui/definitions?x=1", w.Header().Get("Location"), "the token leaves the address")
	cookies := w.Result().Cookies()
	require.Len(t, cookies, 1)
	c := cookies[0]
	assert.Equal(t, CookieName, c.Name)
	assert.True(t, c.HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, c.SameSite)
	assert.Equal(t, Prefix, c.Path)

	assert.Equal(t, http.StatusOK, get("/ui/definitions", func(r *http.Request) { r.AddCookie(c) }).Code)
	assert.Equal(t, http.StatusOK, get("/ui/definitions", func(r *http.Request) { r.Header.Set("Authorization", "Bearer s3cret") }).Code)
	assert.Equal(t, http.StatusUnauthorized, get("/ui/definitions", func(r *http.Request) {
		r.AddCookie(&http.Cookie{Name: CookieName, Value: "wrong"})
	}).Code)
}

// TestTimeline: the bars are in the order the attempts started, whatever the rows' order,
// with a backoff bar between two attempts of a step, and compensations as their own kind.
func TestTimeline(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) *time.Time { x := t0.Add(time.Duration(ms) * time.Millisecond); return &x }
	rows := []views.StepAttempt{ // as ExecutionDetail orders them: by run, step, compensation, attempt
		{Run: 1, StepID: "a", Attempt: 1, Status: "succeeded", StartedAt: at(0), EndedAt: at(10)},
		{Run: 1, StepID: "a", Attempt: 1, Compensation: true, Status: "succeeded", StartedAt: at(400), EndedAt: at(410)},
		{Run: 1, StepID: "b", Attempt: 1, Status: "retry_scheduled", StartedAt: at(10), EndedAt: at(20)},
		{Run: 1, StepID: "b", Attempt: 2, Status: "failed", StartedAt: at(320), EndedAt: at(400)},
		{Run: 1, StepID: "c", Attempt: 1, Status: "scheduled"}, // never started: no bar
	}
	bars, span := timeline(rows, t0.Add(time.Second))
	assert.Equal(t, 410*time.Millisecond, span)
	var got []string
	for _, b := range bars {
		got = append(got, b.Kind+" "+b.StepID)
	}
	assert.Equal(t, []string{"attempt a", "attempt b", "backoff b", "attempt b", "compensation a"}, got)
	backoff := bars[2]
	assert.Equal(t, "backoff 300ms", backoff.Label)
	assert.InDelta(t, 100*20.0/410, backoff.Left, 0.01)
	assert.InDelta(t, 100*300.0/410, backoff.Width, 0.01)
}

// TestLiveStreamsAreBounded: past MaxLive open live streams, a page's stream is answered 503,
// and a stream that ends (its page closed) frees its slot.
func TestLiveStreamsAreBounded(t *testing.T) {
	_, _, js := natstest.Run(t)
	reg, err := registry.New(js, registry.Config{})
	require.NoError(t, err)
	u, err := New(Config{Registry: reg, Views: views.New(pgtest.New(t)), MaxLive: 1})
	require.NoError(t, err)
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	open := func(ctx context.Context) *http.Response {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/ui/executions/live", nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		return resp
	}

	ctx, closePage := context.WithCancel(context.Background())
	defer closePage() // before the server's Close, which waits for its streams
	first := open(ctx)
	require.Equal(t, http.StatusOK, first.StatusCode)
	// A stream let in would never end: its body is read only once it is refused.
	refusedCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	second := open(refusedCtx)
	require.Equal(t, http.StatusServiceUnavailable, second.StatusCode)
	body, _ := io.ReadAll(second.Body)
	second.Body.Close()
	assert.Contains(t, string(body), "MaxLive")
	assert.Equal(t, "5", second.Header.Get("Retry-After"))

	closePage()
	first.Body.Close()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		resp := open(ctx)
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "the slot is freed")
}
