package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// EndedHeader, on an answer of GET /v1/executions/{id}?wait=, says whether the execution has
// ended ("true": its status is completed, failed or cancelled) or the wait ran out ("false").
const EndedHeader = "Memmie-Ended"

// waitExecution answers GET /v1/executions/{id}?wait=D: at once when the execution has ended,
// otherwise when it ends or D runs out (at most Config.MaxWait), with its state then, folded
// from the stream.
func (a *API) waitExecution(w http.ResponseWriter, r *http.Request, eng Engine, id string) {
	v := r.URL.Query().Get("wait")
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		a.fail(w, r, badRequest("wait %q: want a duration such as 30s", v))
		return
	}
	d = min(d, a.cfg.MaxWait)
	release, err := a.follower()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	defer release()
	// The server's timeouts would cut a long wait short.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(d + 30*time.Second))
	_ = rc.SetWriteDeadline(time.Now().Add(d + 30*time.Second))
	seq, err := eng.ExecutionSeq(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	var last *answer
	err = a.states.follow(ctx, id, seq, func(ans answer) error {
		last = &ans
		return nil
	})
	if err != nil && !(errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil) {
		a.fail(w, r, err)
		return
	}
	if last == nil {
		// The wait ran out before the state caught up: read it as a GET without wait does.
		ans, err := a.states.read(r.Context(), id, seq)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		last = &ans
	}
	w.Header().Set(SourceHeader, SourceStream)
	w.Header().Set(EndedHeader, strconv.FormatBool(last.status.Terminal()))
	writeRaw(w, http.StatusOK, last.body)
}

// watchExecution answers GET /v1/executions/{id}/watch with Server-Sent Events: an event
// "state" with the execution's state (its id the stream sequence the state is at) once it
// holds every event recorded before the request, then one after each change, and an event
// "end" with the final state when the execution ends, which ends the stream. A comment comes
// every Config.Heartbeat while nothing changes.
func (a *API) watchExecution(w http.ResponseWriter, r *http.Request) {
	eng, err := a.engine()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	release, err := a.follower()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	defer release()
	seq, err := eng.ExecutionSeq(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	// The client sends nothing more: no read deadline. A client gone is noticed by the
	// writes, which have deadlines.
	_ = rc.SetReadDeadline(time.Time{})
	var (
		mu      sync.Mutex
		started bool
		failed  error
	)
	// send writes one event or comment; a write that fails (the client is gone) ends the watch.
	send := func(chunk string) error {
		mu.Lock()
		defer mu.Unlock()
		if failed != nil {
			return failed
		}
		if !started {
			started = true
			h := w.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-store")
			h.Set("X-Accel-Buffering", "no")
			h.Set(SourceHeader, SourceStream)
			w.WriteHeader(http.StatusOK)
		}
		_ = rc.SetWriteDeadline(time.Now().Add(a.cfg.Heartbeat + 30*time.Second))
		if _, err := fmt.Fprint(w, chunk); err != nil {
			failed = err
			return err
		}
		if err := rc.Flush(); err != nil {
			failed = err
			return err
		}
		return nil
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		t := time.NewTicker(a.cfg.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if send(": keep-alive\n\n") != nil {
					cancel()
					return
				}
			}
		}
	}()
	defer func() { cancel(); <-beats }()
	err = a.states.follow(ctx, id, seq, func(ans answer) error {
		event := "state"
		if ans.status.Terminal() {
			event = "end"
		}
		return send(fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", ans.seq, event, ans.body))
	})
	if err == nil || ctx.Err() != nil {
		return
	}
	mu.Lock()
	wasStarted := started
	mu.Unlock()
	if !wasStarted {
		a.fail(w, r, err)
		return
	}
	a.log.Warn("watch an execution", "execution_id", id, "err", err)
	_ = send("event: error\ndata: {\"error\": {\"code\": \"internal\", \"message\": \"the watch failed: GET the execution or watch again\"}}\n\n")
}

// follower takes a watcher slot; release gives it back.
func (a *API) follower() (release func(), err error) {
	if a.states == nil {
		return nil, errNoFollow
	}
	return a.watchers.acquire()
}

// writeRaw writes a JSON body encoded already.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
	_, _ = w.Write([]byte{'\n'})
}
