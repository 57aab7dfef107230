package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/inbox"
	"github.com/memmie/memmie/internal/services"
	"github.com/memmie/memmie/internal/tracing"
)

// Name is the runner's durable consumer name and its dead-letter source.
const Name = "runner"

// Defaults of Config.
const (
	DefaultWorkers       = 64
	DefaultAckWait       = 5 * time.Second
	DefaultMaxDeliver    = 5
	DefaultMaxAckPending = 1024
	DefaultClockSkew     = 2 * time.Second
	// DefaultMaxResponseBytes leaves room in the report's event (at most events.MaxEventSize)
	// for the envelope and for JSON's escaping of the body.
	DefaultMaxResponseBytes = 256 << 10
)

// Caller makes one HTTP call; *services.Caller is one.
type Caller interface {
	Call(ctx context.Context, req services.Request) services.Result
}

// Local records a report in this process, where the execution's orchestrator runs here
// (*orchestrator.Orchestrator is one). Record returns nil once the report is recorded in the
// execution's history (appended, or found stale); any other error sends the report to the
// inbox instead, but one wrapping faults.ErrCrash, an injected crash, which abandons the
// attempt.
type Local interface {
	Record(ctx context.Context, executionID string, data []byte) error
}

// Config configures a Runner.
type Config struct {
	// Caller calls the services. Required.
	Caller Caller
	// Local, when set, takes the reports of the executions whose orchestrator runs in this
	// process, so that they skip the inbox: the attempt is acknowledged once Local has
	// recorded its report. A report Local does not take goes to the inbox. Defaults to none:
	// every report goes to the inbox.
	Local Local
	// Executions is the stream of execution events. Defaults to streams.Executions.
	Executions string
	// Durable is the consumer's name. Defaults to Name.
	Durable string
	// Workers is how many calls run at once. A runner pulls an attempt only when a worker is
	// free, so the processes that share the consumer share the attempts by their free
	// workers. Defaults to DefaultWorkers.
	Workers int
	// AckWait is how long the server waits for a scheduled attempt to be settled before it
	// delivers it again. The consume loop tells the server a call is in progress every
	// quarter of it, so a call may take longer; AckWait bounds how soon the attempts of a
	// crashed runner are taken up again: called again within their deadlines, or reported
	// as timed out when the deadline has passed (so a crash delays a timeout by up to
	// AckWait). Defaults to DefaultAckWait.
	AckWait time.Duration
	// MaxAckPending bounds the attempts in progress across every runner process. Defaults to
	// DefaultMaxAckPending.
	MaxAckPending int
	// MaxDeliver bounds the deliveries of one attempt: a runner that keeps crashing, or
	// being stopped, in the middle of it. The delivery that reaches it is not called: it is
	// dead-lettered and reported as a failed attempt (a timeout, which the step's retry
	// policy may retry), so that no execution waits for it. A transient failure to report
	// is retried in place and is not a delivery. (The consumer itself has MaxDeliver -1, so
	// that the server never drops an attempt.) Defaults to DefaultMaxDeliver.
	MaxDeliver int
	// ClockSkew is how far this process's clock may be ahead of the orchestrator's, which
	// set the attempt's deadline: the runner enforces the deadline ClockSkew late, so that
	// an attempt is reported as past its deadline only once the deadline is ClockSkew
	// behind, and a call's context ends ClockSkew past it. Defaults to DefaultClockSkew.
	ClockSkew time.Duration
	// RetryBackoff and MaxRetryBackoff pace the retries of a report that could not be
	// published (an unavailable inbox): it is retried in place, without calling again, for
	// as long as it takes. Default to consume.DefaultRetryBackoff and
	// consume.DefaultMaxRetryBackoff.
	RetryBackoff, MaxRetryBackoff time.Duration
	// Now is the clock of reports, and tells whether an attempt is taken up past its
	// deadline. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Tracer records a span per attempt, the child of the trace context its scheduled event
	// carries; the Caller's HTTP client span is its child when the Caller is traced
	// (services.Config.TracerProvider). Defaults to off.
	Tracer tracing.Tracer
	// DeadLetter records attempts that can never be made. Required.
	DeadLetter *deadletter.Writer
	// Hooks inject faults (tests only): faults.RunnerCalled and faults.RunnerReported.
	// Defaults to none.
	Hooks faults.Hook
}

func (c *Config) defaults() error {
	c.Executions = cmp.Or(c.Executions, streams.Executions)
	c.Durable = cmp.Or(c.Durable, Name)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.MaxDeliver = cmp.Or(c.MaxDeliver, DefaultMaxDeliver)
	c.MaxAckPending = cmp.Or(c.MaxAckPending, DefaultMaxAckPending)
	c.ClockSkew = cmp.Or(c.ClockSkew, DefaultClockSkew)
	c.RetryBackoff = cmp.Or(c.RetryBackoff, consume.DefaultRetryBackoff)
	c.MaxRetryBackoff = max(cmp.Or(c.MaxRetryBackoff, consume.DefaultMaxRetryBackoff), c.RetryBackoff)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	switch {
	case c.Caller == nil:
		return errors.New("runner: Caller is required")
	case c.DeadLetter == nil:
		return errors.New("runner: DeadLetter is required")
	case c.Workers < 0:
		return fmt.Errorf("runner: Workers %d is negative", c.Workers)
	case c.AckWait < time.Second:
		return fmt.Errorf("runner: AckWait %s is under a second", c.AckWait)
	case c.MaxDeliver < 2:
		return fmt.Errorf("runner: MaxDeliver %d: at least 2 (the last delivery only reports)", c.MaxDeliver)
	case c.MaxAckPending < c.Workers:
		return fmt.Errorf("runner: MaxAckPending %d is under Workers %d", c.MaxAckPending, c.Workers)
	case c.ClockSkew < 0:
		return fmt.Errorf("runner: ClockSkew %s is negative", c.ClockSkew)
	}
	return nil
}

// Runner makes the HTTP attempts that executions schedule.
type Runner struct {
	js   jetstream.JetStream
	cfg  Config
	log  *slog.Logger
	loop *consume.Loop

	handedOver, published atomic.Uint64
}

// New checks cfg and returns a runner. Start starts it.
func New(js jetstream.JetStream, cfg Config) (*Runner, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &Runner{js: js, cfg: cfg, log: cfg.Logger.With("component", Name)}
	loop, err := consume.New(js, consume.Config{
		Name:   Name,
		Stream: cfg.Executions,
		Consumer: jetstream.ConsumerConfig{
			Durable:     cfg.Durable,
			Description: "Makes the HTTP attempts of steps and compensations",
			FilterSubjects: []string{
				"memmie.executions.*.step.scheduled",
				"memmie.executions.*.compensation.scheduled",
			},
			// From the first: an attempt whose deadline has passed is reported as timed out,
			// not called (a stale report when it has ended), so a new consumer over an old
			// stream calls nothing again.
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			// Unlimited: the server drops a message nak'd past MaxDeliver. The handler
			// bounds the deliveries of an attempt itself (Config.MaxDeliver).
			MaxDeliver:    -1,
			MaxAckPending: cfg.MaxAckPending,
		},
		Workers:         cfg.Workers,
		RetryBackoff:    cfg.RetryBackoff,
		MaxRetryBackoff: cfg.MaxRetryBackoff,
		DeadLetter:      cfg.DeadLetter,
		Logger:          cfg.Logger,
	}, r.handle)
	if err != nil {
		return nil, err
	}
	r.loop = loop
	return r, nil
}

// Start starts consuming scheduled attempts.
func (r *Runner) Start(ctx context.Context) error { return r.loop.Start(ctx) }

// Stop stops consuming; calls in progress finish, or are handed back when ctx ends first.
func (r *Runner) Stop(ctx context.Context) error { return r.loop.Stop(ctx) }

// Stats returns the counters of the runner's consume loop.
func (r *Runner) Stats() consume.Stats { return r.loop.Stats() }

// Reports counts the reports a runner sent, by the way they went.
type Reports struct {
	// HandedOver counts the reports Config.Local recorded.
	HandedOver uint64 `json:"handed_over"`
	// Published counts the reports published to the inbox.
	Published uint64 `json:"published"`
}

// Reports returns how the runner's reports went.
func (r *Runner) Reports() Reports {
	return Reports{HandedOver: r.handedOver.Load(), Published: r.published.Load()}
}

func (r *Runner) handle(ctx context.Context, d consume.Delivery) consume.Outcome {
	ev, err := events.Decode(d.Msg.Data())
	if err != nil {
		return consume.DeadLetter(err.Error())
	}
	var req execution.Request
	switch data := ev.Data.(type) {
	case *events.StepScheduled:
		req = execution.Request{ExecutionID: data.ExecutionID, AttemptRef: data.AttemptRef, Request: data.Request, Deadline: data.Deadline}
	case *events.CompensationScheduled:
		req = execution.Request{ExecutionID: data.ExecutionID, Compensation: true, AttemptRef: data.AttemptRef,
			Request: data.Request, Deadline: data.Deadline}
	default:
		return consume.DeadLetter(fmt.Sprintf("%s is not a scheduled attempt", ev.Type))
	}
	if id, _, err := events.ParseExecutionSubject(d.Msg.Subject()); err != nil || id != req.ExecutionID {
		return consume.DeadLetter(fmt.Sprintf("event of execution %q on subject %s", req.ExecutionID, d.Msg.Subject()))
	}
	if r.cfg.Tracer.On() {
		name := "step attempt"
		if req.Compensation {
			name = "compensation attempt"
		}
		var span trace.Span
		ctx, span = r.cfg.Tracer.Start(ctx, name, d.Msg.Headers(), trace.WithAttributes(
			tracing.ExecutionID.String(req.ExecutionID), tracing.StepID.String(req.StepID),
			tracing.Attempt.Int(req.Attempt), tracing.Service.String(req.Request.Service)))
		defer span.End()
	}
	log := r.log.With("execution_id", req.ExecutionID, "step_id", req.StepID, "attempt", req.Attempt,
		"run", req.Run, "compensation", req.Compensation, "service", req.Request.Service)

	if d.Meta.NumDelivered >= uint64(r.cfg.MaxDeliver) {
		// The attempt was delivered MaxDeliver times without a report: give up on it, and say
		// so, so that the execution goes on.
		reason := fmt.Sprintf("no report after %d deliveries", d.Meta.NumDelivered)
		if err := r.cfg.DeadLetter.Record(ctx, Name, d.Msg, reason); err != nil {
			return consume.Retry(err, 0)
		}
		log.ErrorContext(ctx, "attempt dead-lettered", "reason", reason)
		return r.report(ctx, log, req, events.Response{ErrorKind: events.ErrorTimeout,
			Error: "the runner gave up on the attempt: " + reason})
	}

	// The runner that holds the attempt enforces its deadline: no timer does. An attempt
	// taken up too late (a backlog, or a redelivery after a runner crashed mid-call) fails
	// as a timeout without a call, in the words a timeout timer records. The deadline comes
	// from the orchestrator's clock: allow for this one being ahead.
	timeout := time.Duration(req.Request.TimeoutMS) * time.Millisecond
	callCtx := ctx
	if !req.Deadline.IsZero() {
		deadline := req.Deadline.Add(r.cfg.ClockSkew)
		left := deadline.Sub(r.cfg.Now())
		if left <= 0 {
			log.WarnContext(ctx, "attempt not called: its deadline has passed", "deadline", req.Deadline)
			return r.report(ctx, log, req, events.Response{ErrorKind: events.ErrorTimeout, Error: execution.DeadlinePassed})
		}
		if timeout <= 0 || left < timeout {
			timeout = max(left.Round(time.Millisecond), time.Millisecond) // as the timeout error says it
		}
		var cancel context.CancelFunc
		callCtx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	res := r.cfg.Caller.Call(callCtx, services.Request{
		Service:        req.Request.Service,
		Method:         req.Request.Method,
		Path:           req.Request.Path,
		Body:           req.Request.Body,
		Timeout:        timeout,
		IdempotencyKey: req.Request.IdempotencyKey,
		ExecutionID:    req.ExecutionID,
		StepID:         req.StepID,
		Attempt:        req.Attempt,
	})
	if res.ErrorKind == services.KindCanceled {
		// Shutting down: the outcome is unknown; another delivery makes the call again (the
		// idempotency key makes that safe).
		return consume.Retry(errors.New("call cancelled by shutdown"), time.Millisecond)
	}
	if err := r.cfg.Hooks.At(ctx, faults.RunnerCalled, req.ExecutionID); err != nil {
		return consume.Abandon()
	}
	resp := response(res)
	log.DebugContext(ctx, "attempt made", "status", resp.StatusCode, "error_kind", resp.ErrorKind, "duration_ms", resp.DurationMS)
	return r.report(ctx, log, req, resp)
}

// response turns the caller's result into the report's response.
func response(res services.Result) events.Response {
	resp := events.Response{
		StatusCode: res.StatusCode,
		Body:       res.Body,
		Error:      res.Error,
		DurationMS: res.Duration.Milliseconds(),
	}
	if res.RetryAfter > 0 {
		resp.RetryAfterMS = res.RetryAfter.Milliseconds()
	}
	switch res.ErrorKind {
	case "":
	case services.KindNetwork:
		resp.ErrorKind = events.ErrorNetwork
	case services.KindTimeout:
		resp.ErrorKind = events.ErrorTimeout
	case services.KindHTTP:
		resp.ErrorKind = events.ErrorHTTP
	case services.KindDecode:
		resp.ErrorKind = events.ErrorDecode
	case services.KindUnknownService:
		resp.ErrorKind = events.ErrorUnknownService
	case services.KindTooLarge:
		resp.ErrorKind = events.ErrorTooLarge
	default:
		// An invalid request (a method or path the caller refuses) is the step's input at
		// fault: it would fail the same way again.
		resp.ErrorKind = events.ErrorInput
	}
	return resp
}

// report hands the attempt's report to the execution's orchestrator when it runs in this
// process (Config.Local), or else publishes it to the execution's inbox. Either way the
// attempt is acknowledged only once the report is durable: appended to the history, or
// stored on the inbox. Its id is the report's event id, the same for every delivery of the
// attempt, so a report sent twice is kept once. A publish that fails is tried again in place,
// with a capped backoff, for as long as it takes (the loop keeps the message in progress
// meanwhile): handing the attempt back would make the call again and use up a delivery. Only
// a stop ends the wait, and hands it back.
func (r *Runner) report(ctx context.Context, log *slog.Logger, req execution.Request, resp events.Response) consume.Outcome {
	ev := req.Report(resp, r.cfg.Now())
	data, err := events.Marshal(ev)
	if err != nil {
		// Too large for an event: report that instead of the body.
		log.WarnContext(ctx, "report too large; reporting the size", "err", err)
		ev = req.Report(events.Response{StatusCode: resp.StatusCode, ErrorKind: events.ErrorTooLarge,
			Error: "the response does not fit in an event: " + err.Error(), DurationMS: resp.DurationMS}, r.cfg.Now())
		if data, err = events.Marshal(ev); err != nil {
			return consume.DeadLetter(err.Error())
		}
	}
	if r.cfg.Local != nil {
		err := r.cfg.Local.Record(ctx, req.ExecutionID, data)
		switch {
		case err == nil:
			r.handedOver.Add(1)
			return r.reported(ctx, req)
		case errors.Is(err, faults.ErrCrash):
			return consume.Abandon()
		default: // not this process's execution, or not recorded here: the inbox's
			log.DebugContext(ctx, "report not recorded in this process; publishing it", "err", err)
		}
	}
	wait := r.cfg.RetryBackoff
	for tries := 1; ; tries++ {
		err := inbox.PublishData(ctx, r.js, req.ExecutionID, ev.ID, data)
		if err == nil {
			break
		}
		log.WarnContext(ctx, "report not published; trying again", "err", err, "tries", tries, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return consume.Retry(fmt.Errorf("report not published before the stop: %w", err), time.Millisecond)
		}
		wait = min(2*wait, r.cfg.MaxRetryBackoff)
	}
	r.published.Add(1)
	return r.reported(ctx, req)
}

// reported acknowledges an attempt whose report is durable.
func (r *Runner) reported(ctx context.Context, req execution.Request) consume.Outcome {
	if err := r.cfg.Hooks.At(ctx, faults.RunnerReported, req.ExecutionID); err != nil {
		return consume.Abandon()
	}
	return consume.Ack()
}
