package projections

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
)

// Steps is the execution_steps projection: one row per attempt of a step, or of its
// compensation, in a run of an execution, folded from the step and compensation events of
// MEMMIE_EXECUTIONS. A step settled before any attempt has one row with attempt 0: skipped
// (its reason in output as {"reason": ...}), or failed when its condition or input_map could
// not be evaluated. The execution's lifecycle events leave the rows alone.
type Steps struct {
	log *slog.Logger
}

// NewSteps returns the execution_steps projection. A nil log discards.
func NewSteps(log *slog.Logger) *Steps {
	return &Steps{log: orDiscard(log)}
}

func (*Steps) Name() string   { return "execution_steps" }
func (*Steps) Stream() string { return streams.Executions }

// The step statuses of the rows.
const (
	stepScheduled      = "scheduled"
	stepSucceeded      = "succeeded"
	stepFailed         = "failed"
	stepRetryScheduled = "retry_scheduled"
	stepSkipped        = "skipped"
	// stepTimedOut is an attempt failed for good by a timeout (a retried one is
	// retry_scheduled, its error says why).
	stepTimedOut = "timed_out"
)

// stepRank orders the statuses. An event moves a row only to a higher rank, so that an event
// folded a second time changes nothing. An attempt whose retry a stopping run never makes stays
// retry_scheduled: the core records nothing more of it.
func stepRank(status string) int {
	switch status {
	case stepScheduled:
		return 0
	case stepRetryScheduled:
		return 1
	default:
		return 2
	}
}

// stepKey is the primary key of an execution_steps row.
type stepKey struct {
	ExecutionID  uuid.UUID
	Run          int
	StepID       string
	Attempt      int
	Compensation bool
}

// step is a row of execution_steps. JSON columns hold raw JSON, nil for NULL; a zero time is
// NULL; a nil DurationMS is NULL.
type step struct {
	stepKey
	Status     string
	Request    []byte
	Output     []byte
	Error      []byte
	DurationMS *int64
	StartedAt  time.Time
	EndedAt    time.Time
}

func (r *step) equal(o *step) bool {
	return r.stepKey == o.stepKey && r.Status == o.Status && bytes.Equal(r.Request, o.Request) &&
		bytes.Equal(r.Output, o.Output) && bytes.Equal(r.Error, o.Error) &&
		(r.DurationMS == nil) == (o.DurationMS == nil) && (r.DurationMS == nil || *r.DurationMS == *o.DurationMS) &&
		r.StartedAt.Equal(o.StartedAt) && r.EndedAt.Equal(o.EndedAt)
}

// maxPathBytes bounds the path kept in a row's request summary: a path is expanded from the
// input, so it may be as long as the input.
const maxPathBytes = 512

// requestSummary is what a row keeps of a request: where it went and how big its body was,
// never the body.
type requestSummary struct {
	Service   string `json:"service"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Truncated bool   `json:"path_truncated,omitempty"`
	BodyBytes int    `json:"body_bytes"`
	TimeoutMS int64  `json:"timeout_ms"`
}

func summarize(r events.Request) ([]byte, error) {
	s := requestSummary{Service: r.Service, Method: r.Method, Path: r.Path, TimeoutMS: r.TimeoutMS}
	if len(s.Path) > maxPathBytes {
		s.Path, s.Truncated = truncate(s.Path, maxPathBytes), true
	}
	if len(s.Service) > maxPathBytes {
		s.Service = truncate(s.Service, maxPathBytes)
	}
	if len(s.Method) > 16 {
		s.Method = truncate(s.Method, 16)
	}
	if r.Body != nil {
		b, err := json.Marshal(r.Body)
		if err != nil {
			return nil, fmt.Errorf("request body: %w", err)
		}
		s.BodyBytes = len(b)
	}
	return json.Marshal(s)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// stepOf returns the key of the row an event folds into, false for the events the projection
// leaves alone.
func stepOf(ev Event) (stepKey, bool) {
	var (
		ref  events.AttemptRef
		comp bool
	)
	switch d := ev.Data.(type) {
	case *events.StepScheduled:
		ref = d.AttemptRef
	case *events.StepReported:
		ref = d.AttemptRef
	case *events.StepSucceeded:
		ref = d.AttemptRef
	case *events.StepFailed:
		ref = d.AttemptRef
	case *events.StepRetryScheduled:
		ref = d.AttemptRef
	case *events.StepSkipped:
		ref = events.AttemptRef{Run: d.Run, StepID: d.StepID}
	case *events.CompensationScheduled:
		ref, comp = d.AttemptRef, true
	case *events.CompensationReported:
		ref, comp = d.AttemptRef, true
	case *events.CompensationSucceeded:
		ref, comp = d.AttemptRef, true
	case *events.CompensationFailed:
		ref, comp = d.AttemptRef, true
	case *events.CompensationRetryScheduled:
		ref, comp = d.AttemptRef, true
	default:
		return stepKey{}, false
	}
	id, ok := executionOf(ev)
	if !ok {
		return stepKey{}, false
	}
	return stepKey{ExecutionID: id, Run: ref.Run, StepID: ref.StepID, Attempt: ref.Attempt, Compensation: comp}, true
}

// foldStep folds one event into row, nil when the attempt has no row yet, and returns the row
// after it and whether it changed. It is pure, and idempotent: each event sets only what it
// carries (the same values a second time), and the status only moves up its rank, so that an
// event folded again changes nothing.
//
// started_at is when the attempt was scheduled (or first seen, for a step without a request);
// ended_at and duration_ms are the runner's report's when there is one, else the decision's
// time and its distance from started_at.
func foldStep(row *step, key stepKey, ev Event) (*step, bool, error) {
	// Postgres keeps microseconds: a duration computed from a loaded time must equal one
	// computed within a batch.
	at := ev.Time.Truncate(time.Microsecond)
	r := step{stepKey: key, Status: stepScheduled}
	if row != nil {
		r = *row
	}
	var (
		status string
		serr   *events.StepError
		output any
		hasOut bool
	)
	switch d := ev.Data.(type) {
	case *events.StepScheduled:
		if err := r.scheduled(d.Request, at); err != nil {
			return nil, false, err
		}
	case *events.CompensationScheduled:
		if err := r.scheduled(d.Request, at); err != nil {
			return nil, false, err
		}
	case *events.StepReported:
		r.reported(d.Response, at)
	case *events.CompensationReported:
		r.reported(d.Response, at)
	case *events.StepSucceeded:
		status, output, hasOut = stepSucceeded, d.Output, true
	case *events.CompensationSucceeded:
		status, output, hasOut = stepSucceeded, d.Output, true
	case *events.StepFailed:
		status, serr = stepFailed, &d.Error
	case *events.CompensationFailed:
		status, serr = stepFailed, &d.Error
	case *events.StepRetryScheduled:
		status, serr = stepRetryScheduled, &d.Error
	case *events.CompensationRetryScheduled:
		status, serr = stepRetryScheduled, &d.Error
	case *events.StepSkipped:
		status, output, hasOut = stepSkipped, map[string]string{"reason": d.Reason}, true
	default:
		return row, false, nil
	}
	if status != "" {
		if status == stepFailed && serr.Kind == events.ErrorTimeout {
			status = stepTimedOut
		}
		if stepRank(status) > stepRank(r.Status) {
			r.Status = status
			if hasOut {
				out, err := rawJSON(output)
				if err != nil {
					return nil, false, fmt.Errorf("step %s output: %w", key.StepID, err)
				}
				r.Output = out
			}
			if serr != nil {
				e, err := json.Marshal(serr)
				if err != nil {
					return nil, false, fmt.Errorf("step %s error: %w", key.StepID, err)
				}
				r.Error = e
			}
		}
		if r.StartedAt.IsZero() {
			r.StartedAt = at
		}
		if r.DurationMS == nil {
			// No report (a timeout, a transform, a skip): the decision ends the attempt.
			ms := at.Sub(r.StartedAt).Milliseconds()
			r.EndedAt, r.DurationMS = at, &ms
		}
	}
	if row != nil && r.equal(row) {
		return row, false, nil
	}
	return &r, true, nil
}

// scheduled records the attempt's request and when it was asked for.
func (r *step) scheduled(req events.Request, at time.Time) error {
	sum, err := summarize(req)
	if err != nil {
		return fmt.Errorf("step %s request: %w", r.StepID, err)
	}
	r.Request, r.StartedAt = sum, at
	return nil
}

// reported records the runner's account of the call: its duration, and when it was reported.
func (r *step) reported(resp events.Response, at time.Time) {
	ms := resp.DurationMS
	r.DurationMS, r.EndedAt = &ms, at
}

// Apply loads the rows of the batch's attempts, folds the batch into them and upserts the rows
// it changed in one INSERT ... ON CONFLICT over arrays.
func (p *Steps) Apply(ctx context.Context, tx pgx.Tx, batch []Event) error {
	var keys []stepKey
	seen := make(map[stepKey]bool)
	for _, ev := range batch {
		k, ok := stepOf(ev)
		if ok && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	rows, err := loadSteps(ctx, tx, keys)
	if err != nil {
		return err
	}
	var changed []stepKey
	dirty := make(map[stepKey]bool)
	for _, ev := range batch {
		k, ok := stepOf(ev)
		if !ok {
			continue
		}
		row, ch, err := foldStep(rows[k], k, ev)
		if err != nil {
			// An event that cannot make a row would stop the projection forever: leave it
			// out, loudly.
			p.log.Error("execution_steps projection: event left out", "event_id", ev.ID, "seq", ev.Seq, "err", err)
			continue
		}
		if ch {
			rows[k] = row
			if !dirty[k] {
				dirty[k] = true
				changed = append(changed, k)
			}
		}
	}
	if len(changed) == 0 {
		return nil
	}
	return upsertSteps(ctx, tx, rows, changed)
}

const stepColumns = `execution_id, run, step_id, attempt, compensation, status, request, output, error,
	duration_ms, started_at, ended_at`

func loadSteps(ctx context.Context, tx pgx.Tx, keys []stepKey) (map[stepKey]*step, error) {
	n := len(keys)
	ids, runs, stepIDs, attempts, comps := make([]uuid.UUID, n), make([]int32, n), make([]string, n), make([]int32, n), make([]bool, n)
	for i, k := range keys {
		ids[i], runs[i], stepIDs[i], attempts[i], comps[i] = k.ExecutionID, int32(k.Run), k.StepID, int32(k.Attempt), k.Compensation
	}
	rs, err := tx.Query(ctx, `SELECT s.execution_id, s.run, s.step_id, s.attempt, s.compensation, s.status, s.request,
			s.output, s.error, s.duration_ms, s.started_at, s.ended_at
		FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[], $5::bool[]) AS k(id, run, step, attempt, comp)
		JOIN execution_steps s ON (s.execution_id, s.run, s.step_id, s.attempt, s.compensation) = (k.id, k.run, k.step, k.attempt, k.comp)`,
		ids, runs, stepIDs, attempts, comps)
	if err != nil {
		return nil, fmt.Errorf("load execution steps: %w", err)
	}
	defer rs.Close()
	out := make(map[stepKey]*step, n)
	for rs.Next() {
		var (
			r              step
			started, ended *time.Time
		)
		if err := rs.Scan(&r.ExecutionID, &r.Run, &r.StepID, &r.Attempt, &r.Compensation, &r.Status, &r.Request,
			&r.Output, &r.Error, &r.DurationMS, &started, &ended); err != nil {
			return nil, fmt.Errorf("load execution steps: %w", err)
		}
		if started != nil {
			r.StartedAt = *started
		}
		if ended != nil {
			r.EndedAt = *ended
		}
		out[r.stepKey] = &r
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("load execution steps: %w", err)
	}
	return out, nil
}

func upsertSteps(ctx context.Context, tx pgx.Tx, rows map[stepKey]*step, keys []stepKey) error {
	n := len(keys)
	var (
		ids                  = make([]uuid.UUID, n)
		runs, attempts       = make([]int32, n), make([]int32, n)
		stepIDs, status      = make([]string, n), make([]string, n)
		comps                = make([]bool, n)
		request, output, err = make([]*string, n), make([]*string, n), make([]*string, n)
		duration             = make([]*int64, n)
		started, ended       = make([]*time.Time, n), make([]*time.Time, n)
	)
	for i, k := range keys {
		r := rows[k]
		ids[i], runs[i], stepIDs[i], attempts[i], comps[i] = k.ExecutionID, int32(k.Run), k.StepID, int32(k.Attempt), k.Compensation
		status[i], request[i], output[i], err[i] = r.Status, text(r.Request), text(r.Output), text(r.Error)
		duration[i], started[i], ended[i] = r.DurationMS, timePtr(r.StartedAt), timePtr(r.EndedAt)
	}
	if _, e := tx.Exec(ctx, `INSERT INTO execution_steps (`+stepColumns+`)
		SELECT id, run, step, attempt, comp, st, req::jsonb, outp::jsonb, err::jsonb, dur, s, e
		FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[], $5::bool[], $6::text[], $7::text[], $8::text[],
			$9::text[], $10::bigint[], $11::timestamptz[], $12::timestamptz[])
			AS r(id, run, step, attempt, comp, st, req, outp, err, dur, s, e)
		ON CONFLICT (execution_id, run, step_id, attempt, compensation) DO UPDATE SET
			status = EXCLUDED.status, request = EXCLUDED.request, output = EXCLUDED.output,
			error = EXCLUDED.error, duration_ms = EXCLUDED.duration_ms, started_at = EXCLUDED.started_at,
			ended_at = EXCLUDED.ended_at`,
		ids, runs, stepIDs, attempts, comps, status, request, output, err, duration, started, ended); e != nil {
		return fmt.Errorf("upsert execution steps: %w", e)
	}
	return nil
}
