package ui

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/core/blob"
)

var (
	errNoEngine   = errors.New("this memmie serves no executions")
	errNoDatabase = errors.New("no database configured: the lists come from Postgres; start memmie with --database-url (MEMMIE_DATABASE_URL)")
)

var funcs = template.FuncMap{
	"json": func(v any) string {
		switch x := v.(type) {
		case json.RawMessage:
			if len(x) == 0 {
				return ""
			}
			v = x
		case []byte:
			if len(x) == 0 {
				return ""
			}
			if !json.Valid(x) {
				return string(x)
			}
			v = json.RawMessage(x)
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	},
	"time": func(t any) string {
		switch x := t.(type) {
		case time.Time:
			if x.IsZero() {
				return ""
			}
			return x.UTC().Format("2006-01-02 15:04:05.000")
		case *time.Time:
			if x == nil {
				return ""
			}
			return x.UTC().Format("2006-01-02 15:04:05.000")
		}
		return ""
	},
	"qs": func(q url.Values, kv ...string) string {
		c := url.Values{}
		for k, v := range q {
			if k != "fragment" {
				c[k] = v
			}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				c.Del(kv[i])
			} else {
				c.Set(kv[i], kv[i+1])
			}
		}
		return c.Encode()
	},
	"short": func(s string) string {
		if len(s) > 8 {
			return s[:8]
		}
		return s
	},
}

func (u *UI) executionQuery(r *http.Request) views.ExecutionQuery {
	q := r.URL.Query()
	return views.ExecutionQuery{Status: q.Get("status"), WorkflowID: q.Get("workflow"), ProviderID: q.Get("provider"),
		BlobID: q.Get("blob"), Cursor: q.Get("cursor"), Limit: u.cfg.PageSize}
}

// executions is the list, newest first, a page at a time.
func (u *UI) executions(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Views == nil {
		u.fail(w, r, http.StatusServiceUnavailable, errNoDatabase)
		return
	}
	page, err := u.cfg.Views.Executions(r.Context(), u.executionQuery(r))
	if err != nil {
		u.fail(w, r, statusOf(err), fmt.Errorf("list executions: %w", err))
		return
	}
	u.render(w, r, "executions", map[string]any{"Title": "Executions", "List": page, "Mark": listMark(page),
		"Statuses": []string{"queued", "running", "compensating", "retry_scheduled", "completed", "failed", "cancelled"}})
}

// executionsLive is a Server-Sent Events stream that says "changed" whenever the list's page
// (with the same filters and cursor) reads differently.
func (u *UI) executionsLive(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Views == nil {
		u.fail(w, r, http.StatusServiceUnavailable, errNoDatabase)
		return
	}
	q := u.executionQuery(r)
	u.live(w, r, func(ctx context.Context) (string, error) {
		page, err := u.cfg.Views.Executions(ctx, q)
		if err != nil {
			return "", err
		}
		return listMark(page), nil
	})
}

// liveHeartbeat is how often a live stream that had nothing to say sends a comment.
const liveHeartbeat = 15 * time.Second

// listMark is what the list's page shows, hashed: its live stream says "changed" when it moves.
func listMark(page views.ExecutionPage) string {
	h := sha256.New()
	for _, e := range page.Executions {
		fmt.Fprintf(h, "%s %s %d %s\n", e.ExecutionID, e.Status, e.Run, e.UpdatedAt)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// live streams "changed" each time mark reads differently from the last time, checking every
// Config.LivePoll, until the client goes. The first mark is the page's own (?mark=, what it
// showed when it was rendered), so that a change between the page and its stream is told.
func (u *UI) live(w http.ResponseWriter, r *http.Request, mark func(context.Context) (string, error)) {
	select {
	case u.streams <- struct{}{}:
		defer func() { <-u.streams }()
	default:
		w.Header().Set("Retry-After", "5")
		u.fail(w, r, http.StatusServiceUnavailable,
			fmt.Errorf("%d live pages are open, the most at once (ui.Config.MaxLive)", u.cfg.MaxLive))
		return
	}
	rc := http.NewResponseController(w)
	// The server's deadlines are those of one request: a stream has none to read, and each
	// write has its own.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(liveHeartbeat + 30*time.Second))
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	last := r.URL.Query().Get("mark")
	tick := time.NewTicker(u.cfg.LivePoll)
	defer tick.Stop()
	// A comment when nothing changed for a while: it notices a client gone, and each write
	// moves the write deadline (and keeps proxies from closing the stream).
	beat := time.NewTicker(liveHeartbeat)
	defer beat.Stop()
	for {
		msg := ""
		select {
		case <-r.Context().Done():
			return
		case <-beat.C:
			msg = ": heartbeat\n\n"
		case <-tick.C:
			// An error is told by the page's next read; the stream waits for the next check.
			if m, err := mark(r.Context()); err == nil && m != last {
				last, msg = m, "event: changed\ndata: {}\n\n"
			}
		}
		if msg == "" {
			continue
		}
		_ = rc.SetWriteDeadline(time.Now().Add(liveHeartbeat + 30*time.Second))
		if _, err := fmt.Fprint(w, msg); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// bar is one bar of an execution's timeline: a step attempt, a compensation or a backoff.
type bar struct {
	views.StepAttempt
	Kind        string // "attempt", "compensation" or "backoff"
	Left, Width float64
	Label       string
}

// timeline lays the attempts out on one time axis, in the order they started, with the
// backoff wait between two attempts of a step as a bar of its own.
func timeline(attempts []views.StepAttempt, now time.Time) (bars []bar, span time.Duration) {
	var started []views.StepAttempt
	for _, a := range attempts {
		if a.StartedAt != nil {
			started = append(started, a)
		}
	}
	if len(started) == 0 {
		return nil, 0
	}
	slices.SortStableFunc(started, func(a, b views.StepAttempt) int { return a.StartedAt.Compare(*b.StartedAt) })
	first, end := *started[0].StartedAt, *started[0].StartedAt
	ends := make([]time.Time, len(started))
	for i, a := range started {
		e := now
		if a.EndedAt != nil {
			e = *a.EndedAt
		}
		ends[i] = e
		if e.After(end) {
			end = e
		}
	}
	span = max(end.Sub(first), time.Millisecond)
	pos := func(t time.Time) float64 { return 100 * float64(t.Sub(first)) / float64(span) }
	prev := map[string]int{} // run/step/compensation to its last attempt's index
	for i, a := range started {
		key := fmt.Sprintf("%d/%s/%t", a.Run, a.StepID, a.Compensation)
		if j, ok := prev[key]; ok && ends[j].Before(*a.StartedAt) {
			bars = append(bars, bar{StepAttempt: a, Kind: "backoff", Left: pos(ends[j]), Width: pos(*a.StartedAt) - pos(ends[j]),
				Label: fmt.Sprintf("backoff %s", a.StartedAt.Sub(ends[j]).Round(time.Millisecond))})
		}
		prev[key] = i
		kind, label := "attempt", fmt.Sprintf("%s attempt %d", a.StepID, a.Attempt)
		if a.Compensation {
			kind, label = "compensation", fmt.Sprintf("compensate %s attempt %d", a.StepID, a.Attempt)
		}
		bars = append(bars, bar{StepAttempt: a, Kind: kind, Left: pos(*a.StartedAt), Width: max(pos(ends[i])-pos(*a.StartedAt), 0.5),
			Label: fmt.Sprintf("run %d: %s, %s", a.Run, label, ends[i].Sub(*a.StartedAt).Round(time.Millisecond))})
	}
	return bars, span
}

// execution is one execution: the projections' detail (the stream's state when they hold
// no row of it yet), its timeline and a page of its raw history.
func (u *UI) execution(w http.ResponseWriter, r *http.Request) {
	eng := u.cfg.Engine
	if eng == nil {
		u.fail(w, r, http.StatusServiceUnavailable, errNoEngine)
		return
	}
	id := r.PathValue("id")
	ctx := r.Context()
	seq, err := eng.ExecutionSeq(ctx, id)
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	data := map[string]any{"Title": "Execution " + id, "ID": id, "Seq": seq}
	var detail *views.ExecutionDetail
	if u.cfg.Views != nil {
		detail, err = u.cfg.Views.ExecutionDetail(ctx, id, seq)
		if errors.Is(err, views.ErrBehind) {
			data["Behind"] = true
			detail, err = u.cfg.Views.ExecutionDetail(ctx, id, 0)
		}
		if err != nil && !errors.Is(err, views.ErrBehind) {
			u.fail(w, r, statusOf(err), err)
			return
		}
	}
	data["Mark"] = executionMark(seq, detail != nil && data["Behind"] == nil)
	if detail != nil {
		bars, span := timeline(detail.Attempts, time.Now())
		data["Detail"], data["Bars"], data["Span"] = detail, bars, span.Round(time.Millisecond)
		data["Retryable"] = detail.Status == "failed" // engine.Retry's rule
		data["Cancellable"] = !slices.Contains([]string{"completed", "failed", "cancelled"}, detail.Status)
	} else {
		st, err := eng.Execution(ctx, id)
		if err != nil {
			u.fail(w, r, statusOf(err), err)
			return
		}
		data["State"] = st
	}
	var after uint64
	if v := r.URL.Query().Get("after"); v != "" {
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			u.fail(w, r, http.StatusBadRequest, fmt.Errorf("after %q: want the next cursor of a previous page", v))
			return
		}
	}
	hist, err := eng.HistoryPage(ctx, id, after, engine.DefaultHistoryPage)
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	envelopes := make([]string, len(hist.Events))
	for i, ev := range hist.Events {
		b, err := events.Marshal(ev)
		if err != nil {
			u.fail(w, r, http.StatusInternalServerError, fmt.Errorf("encode event %s: %w", ev.ID, err))
			return
		}
		envelopes[i] = funcs["json"].(func(any) string)(json.RawMessage(b))
	}
	data["Events"], data["Next"] = envelopes, hist.Next
	u.render(w, r, "execution", data)
}

// executionLive streams "changed" each time the execution's last sequence moves.
func (u *UI) executionLive(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Engine == nil {
		u.fail(w, r, http.StatusServiceUnavailable, errNoEngine)
		return
	}
	id := r.PathValue("id")
	var (
		at       uint64 // the last sequence read
		caughtUp bool   // whether the projections hold the execution up to at
	)
	u.live(w, r, func(ctx context.Context) (string, error) {
		seq, err := u.cfg.Engine.ExecutionSeq(ctx, id)
		if err != nil {
			return "", err
		}
		if seq != at {
			at, caughtUp = seq, false
		}
		// The page shows the projections: it changes again once they have caught up.
		if u.cfg.Views != nil && !caughtUp {
			_, err := u.cfg.Views.ExecutionDetail(ctx, id, seq)
			caughtUp = err == nil
		}
		return executionMark(at, caughtUp), nil
	})
}

// executionMark is what an execution's page shows: its last stream sequence, and whether the
// projections had applied it.
func executionMark(seq uint64, caughtUp bool) string { return fmt.Sprintf("%d-%t", seq, caughtUp) }

func (u *UI) cancel(w http.ResponseWriter, r *http.Request) {
	u.action(w, r, "cancel", func(ctx context.Context, id string) error {
		reason := r.FormValue("reason")
		if len(reason) > api.MaxReasonLength {
			return fmt.Errorf("%w: reason has %d bytes, at most %d allowed", engine.ErrInvalid, len(reason), api.MaxReasonLength)
		}
		return u.cfg.Engine.Cancel(ctx, id, cmpOr(reason, "cancelled from the web UI"))
	})
}

func (u *UI) retry(w http.ResponseWriter, r *http.Request) {
	u.action(w, r, "retry", func(ctx context.Context, id string) error { return u.cfg.Engine.Retry(ctx, id) })
}

// action runs cancel or retry, as the API's POST /v1/executions/{id}/cancel and /retry do,
// and goes back to the execution's page.
func (u *UI) action(w http.ResponseWriter, r *http.Request, what string, do func(context.Context, string) error) {
	if u.cfg.Engine == nil {
		u.fail(w, r, http.StatusServiceUnavailable, errNoEngine)
		return
	}
	id := r.PathValue("id")
	to := "/ui/executions/" + url.PathEscape(id)
	if err := do(r.Context(), id); err != nil {
		back(w, r, to, "error", what+": "+err.Error())
		return
	}
	back(w, r, to, "notice", what+" requested")
}

func (u *UI) blobForm(w http.ResponseWriter, r *http.Request) {
	if id := strings.TrimSpace(r.URL.Query().Get("id")); id != "" {
		http.Redirect(w, r, "/ui/blobs/"+url.PathEscape(id), http.StatusSeeOther)
		return
	}
	u.render(w, r, "blobs", map[string]any{"Title": "Blobs"})
}

// blob is one blob: a page of its versions, the document at a version and a diff of two.
func (u *UI) blob(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Views == nil {
		u.fail(w, r, http.StatusServiceUnavailable, errNoDatabase)
		return
	}
	ctx, id, q := r.Context(), r.PathValue("id"), r.URL.Query()
	last, err := u.cfg.Views.Blob(ctx, id)
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	num := func(name string, def int64) (int64, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > last.Version {
			return 0, fmt.Errorf("%s %q: blob %s has versions 1 to %d", name, v, id, last.Version)
		}
		return n, nil
	}
	after, err := num("after", 0)
	if err != nil {
		u.fail(w, r, http.StatusBadRequest, err)
		return
	}
	page, err := u.cfg.Views.BlobDeltas(ctx, id, after, u.cfg.PageSize)
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	version, err := num("version", last.Version)
	if err != nil {
		u.fail(w, r, http.StatusBadRequest, err)
		return
	}
	to, err := num("to", last.Version)
	if err != nil {
		u.fail(w, r, http.StatusBadRequest, err)
		return
	}
	from, err := num("from", max(to-1, 0))
	if err != nil {
		u.fail(w, r, http.StatusBadRequest, err)
		return
	}
	at := func(v int64) (blob.State, error) {
		switch v {
		case 0:
			return blob.State{}, nil
		case last.Version:
			return last, nil
		}
		return u.cfg.Views.BlobAt(ctx, id, v)
	}
	doc, err := at(version)
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	src, err := at(from)
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	tgt, err := at(to)
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	patch, err := api.DiffBlob(&src, &tgt)
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, fmt.Errorf("diff blob %s from version %d to %d: %w", id, from, to, err))
		return
	}
	u.render(w, r, "blob", map[string]any{"Title": "Blob " + id, "ID": id, "Last": last, "Deltas": page,
		"Version": version, "Doc": doc, "From": from, "To": to, "Patch": patch})
}

func (u *UI) deadLetters(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Views == nil {
		u.fail(w, r, http.StatusServiceUnavailable, errNoDatabase)
		return
	}
	q := r.URL.Query()
	page, err := u.cfg.Views.DeadLetters(r.Context(), views.DeadLetterQuery{Limit: u.cfg.PageSize, Cursor: q.Get("cursor")})
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	u.render(w, r, "deadletters", map[string]any{"Title": "Dead letters", "List": page})
}

func (u *UI) deadLetter(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Views == nil {
		u.fail(w, r, http.StatusServiceUnavailable, errNoDatabase)
		return
	}
	id := r.PathValue("id")
	if err := events.ValidToken(id); err != nil {
		u.fail(w, r, http.StatusBadRequest, fmt.Errorf("dead letter id: %w", err))
		return
	}
	dl, err := u.cfg.Views.DeadLetter(r.Context(), id)
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	u.render(w, r, "deadletter", map[string]any{"Title": "Dead letter " + id, "DL": dl})
}

// redrive sends back the dead letters of the form's "id" fields, as POST
// /v1/deadletter/{id}/redrive does for one.
func (u *UI) redrive(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Views == nil || u.cfg.Redriver == nil {
		u.fail(w, r, http.StatusServiceUnavailable, errors.New("this memmie cannot redrive: no database or no JetStream connection"))
		return
	}
	if err := r.ParseForm(); err != nil {
		u.fail(w, r, http.StatusBadRequest, err)
		return
	}
	ids := r.PostForm["id"]
	if len(ids) == 0 {
		back(w, r, "/ui/deadletters", "error", "no dead letter selected")
		return
	}
	var done, failed []string
	for _, id := range ids {
		if err := u.redriveOne(r.Context(), id); err != nil {
			failed = append(failed, id+": "+err.Error())
			continue
		}
		done = append(done, id)
	}
	if len(failed) > 0 {
		back(w, r, "/ui/deadletters", "error", fmt.Sprintf("redriven %d; failed: %s", len(done), strings.Join(failed, "; ")))
		return
	}
	back(w, r, "/ui/deadletters", "notice", fmt.Sprintf("redriven: %s", strings.Join(done, ", ")))
}

func (u *UI) redriveOne(ctx context.Context, id string) error {
	if err := events.ValidToken(id); err != nil {
		return fmt.Errorf("dead letter id: %w", err)
	}
	dl, err := u.cfg.Views.DeadLetter(ctx, id)
	if err != nil {
		return err
	}
	_, err = u.cfg.Redriver.Redrive(ctx, dl.ID, &events.DeadLetter{Source: dl.Source, Stream: dl.Stream, Sequence: dl.StreamSeq,
		Subject: dl.Subject, Headers: dl.Headers, Data: dl.Data, Truncated: dl.Truncated, Reason: dl.Reason})
	return err
}

func (u *UI) queue(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Views == nil {
		u.fail(w, r, http.StatusServiceUnavailable, errNoDatabase)
		return
	}
	q := r.URL.Query()
	page, err := u.cfg.Views.Queue(r.Context(), views.QueueQuery{Limit: u.cfg.PageSize, Cursor: q.Get("cursor"), Status: q.Get("status")})
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	running, err := u.cfg.Views.Queue(r.Context(), views.QueueQuery{Limit: max(u.cfg.MaxRunning, 1) + 1, Status: "running"})
	if err != nil {
		u.fail(w, r, statusOf(err), err)
		return
	}
	u.render(w, r, "queue", map[string]any{"Title": "Queue", "List": page, "Running": len(running.Queue),
		"More": running.Next != "", "MaxRunning": u.cfg.MaxRunning})
}

func (u *UI) definitions(w http.ResponseWriter, r *http.Request) {
	type kind struct {
		Kind string
		Revs []api.Definition
	}
	var kinds []kind
	for _, k := range []definitions.Kind{definitions.KindWorkflow, definitions.KindSchema, definitions.KindProvider} {
		kd := kind{Kind: string(k)}
		for _, cur := range u.cfg.Registry.List(k) {
			for _, rev := range u.cfg.Registry.History(k, cur.ID) {
				kd.Revs = append(kd.Revs, api.Definition{Kind: rev.Kind, ID: rev.ID, Revision: rev.Revision, Active: rev.Active,
					RegisteredAt: rev.Time.UTC(), Definition: rev.Canonical})
			}
		}
		kinds = append(kinds, kd)
	}
	u.render(w, r, "definitions", map[string]any{"Title": "Definitions", "Kinds": kinds})
}

// statusOf is the status of a views or engine error.
func statusOf(err error) int {
	switch {
	case errors.Is(err, engine.ErrNotFound), errors.Is(err, views.ErrBlobNotFound), errors.Is(err, views.ErrVersionNotFound), errors.Is(err, views.ErrDeadLetterNotFound):
		return http.StatusNotFound
	case errors.Is(err, views.ErrCursor), errors.Is(err, engine.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, context.Canceled):
		return 499
	}
	return http.StatusInternalServerError
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
