package timers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/inbox"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/tracing"
)

// Name is the timers handler's durable consumer name and its dead-letter source.
const Name = "timers"

// Defaults of Config.
const (
	DefaultScheduleAfter = 10 * time.Second
	DefaultWorkers       = 8
	DefaultAckWait       = 5 * time.Second
	DefaultMaxAckPending = 20_000
)

// Headers of a JetStream message schedule (nats-server 2.12 and later).
const (
	HeaderSchedule       = "Nats-Schedule"
	HeaderScheduleTarget = "Nats-Schedule-Target"
)

// Config configures a Timers handler.
type Config struct {
	// Executions is the stream of execution events. Defaults to streams.Executions.
	Executions string
	// Durable is the consumer's name. Defaults to Name.
	Durable string
	// ScheduleAfter splits timers in two. One due within it is held on the consumer with
	// NakWithDelay: exact to the millisecond, but it holds an ack slot (MaxAckPending) until
	// due and counts a delivery. One due later becomes a JetStream message schedule: no slot
	// held however long it waits, but whole seconds only (it is rounded up, and the
	// orchestrator holds one that fires early). Retry backoffs are mostly short; execution
	// deadlines (an hour by default) are long. A run's deadline further off than that is
	// scheduled only if the run is still running ScheduleAfter after its start: its started
	// event is held until then. Defaults to DefaultScheduleAfter.
	ScheduleAfter time.Duration
	// Workers is how many timer events are handled at once. Defaults to DefaultWorkers.
	Workers int
	// AckWait is how long the server waits for a timer event to be settled (a publish, a
	// millisecond's work) before it delivers it again: how late a crashed process's timer
	// events are taken up. Defaults to DefaultAckWait.
	AckWait time.Duration
	// MaxAckPending bounds the timers held with NakWithDelay at once (those due within
	// ScheduleAfter, and the started events of the runs of the last ScheduleAfter), plus those
	// being handled. When it is reached, new timer events wait: at the defaults, past 2,000
	// runs started per second. Defaults to DefaultMaxAckPending.
	MaxAckPending int
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Tracer records a span when a timer is fired (timer.fire) or scheduled (timer.schedule),
	// joined to the trace context of the event that set it (the execution's trace, which the
	// orchestrator's events carry when its queued event had one). Defaults to off.
	Tracer tracing.Tracer
	// DeadLetter records timer events that can never be handled. Required.
	DeadLetter *deadletter.Writer
	// Hooks inject faults (tests only): faults.TimersSet, once a timer event's timer is set,
	// or found not needed (the run ended), and before the event is acknowledged. Defaults
	// to none.
	Hooks faults.Hook
	// RetryBackoff and MaxRetryBackoff pace the retries of a timer that could not be fired
	// or scheduled (an unavailable inbox): it is retried for as long as that lasts.
	// Default to consume.DefaultRetryBackoff and consume.DefaultMaxRetryBackoff.
	RetryBackoff, MaxRetryBackoff time.Duration
}

func (c *Config) defaults() error {
	c.Executions = cmp.Or(c.Executions, streams.Executions)
	c.Durable = cmp.Or(c.Durable, Name)
	c.ScheduleAfter = cmp.Or(c.ScheduleAfter, DefaultScheduleAfter)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.MaxAckPending = cmp.Or(c.MaxAckPending, DefaultMaxAckPending)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	switch {
	case c.DeadLetter == nil:
		return errors.New("timers: DeadLetter is required")
	case c.ScheduleAfter < 2*time.Second:
		// A schedule fires on whole seconds, at least 250 ms after it is due.
		return fmt.Errorf("timers: ScheduleAfter %s is under 2 seconds", c.ScheduleAfter)
	case c.Workers < 0:
		return fmt.Errorf("timers: Workers %d is negative", c.Workers)
	case c.AckWait < time.Second:
		return fmt.Errorf("timers: AckWait %s is under a second", c.AckWait)
	case c.MaxAckPending < c.Workers:
		return fmt.Errorf("timers: MaxAckPending %d is under Workers %d", c.MaxAckPending, c.Workers)
	}
	return nil
}

// Timers turns the events that ask for a timer into timer.fired commands at their due time.
type Timers struct {
	js   jetstream.JetStream
	cfg  Config
	log  *slog.Logger
	loop *consume.Loop
}

// Filters are the subjects of the events the handler reads: those that set a timer.
// step.scheduled and compensation.scheduled are not among them: an attempt's deadline is
// enforced by the runner that holds it. Nor are the ends of executions: a run's deadline is
// scheduled only for a run still running ScheduleAfter after its start (see handle), so an
// end has no schedule to purge in the common case, and a later one fires into a state that
// ignores it.
var Filters = []string{
	"memmie.executions.*.step.retry_scheduled",
	"memmie.executions.*.compensation.retry_scheduled",
	"memmie.executions.*.started",
	"memmie.executions.*.retry_scheduled",
}

// New checks cfg and returns a timers handler. Start starts it.
func New(js jetstream.JetStream, cfg Config) (*Timers, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	t := &Timers{js: js, cfg: cfg, log: cfg.Logger.With("component", Name)}
	loop, err := consume.New(js, consume.Config{
		Name:   Name,
		Stream: cfg.Executions,
		Consumer: jetstream.ConsumerConfig{
			Durable:        cfg.Durable,
			Description:    "Sets durable timers: retry backoffs, execution deadlines and re-runs",
			FilterSubjects: Filters,
			// From the first: a timer of an ended execution fires into a state that ignores it.
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			// Unlimited: every NakWithDelay that holds a timer counts as a delivery, and a
			// timer must not be dropped. Events that can never be handled are dead-lettered
			// by the handler; transient failures are retried for as long as they last.
			MaxDeliver:    -1,
			MaxAckPending: cfg.MaxAckPending,
		},
		Workers:         cfg.Workers,
		RetryBackoff:    cfg.RetryBackoff,
		MaxRetryBackoff: cfg.MaxRetryBackoff,
		DeadLetter:      cfg.DeadLetter,
		Logger:          cfg.Logger,
	}, t.handle)
	if err != nil {
		return nil, err
	}
	t.loop = loop
	return t, nil
}

// Start starts consuming.
func (t *Timers) Start(ctx context.Context) error { return t.loop.Start(ctx) }

// Stop stops consuming. Held timers stay with the server and come back on the next start.
func (t *Timers) Stop(ctx context.Context) error { return t.loop.Stop(ctx) }

// Stats returns the counters of the timers' consume loop.
func (t *Timers) Stats() consume.Stats { return t.loop.Stats() }

// Timer is the timer an event asks for.
type Timer struct {
	Kind events.TimerKind
	// Ref is the (run, step, attempt) the timer is set for: for a retry, the attempt that is
	// due; for a timeout, the attempt that runs out.
	Ref events.AttemptRef
	At  time.Time
}

// TimerOf returns the timer an execution event asks for; ok is false when it asks for none.
// The handler no longer reads step.scheduled and compensation.scheduled (see Filters); one
// that still reaches it, delivered under an older version's filter (a timeout it held, or a
// process of that version that set the filter again), is timed out as that version did, so
// that an upgrade loses no timer.
func TimerOf(ev events.Event) (t Timer, ok bool) {
	switch d := ev.Data.(type) {
	case *events.StepScheduled:
		return Timer{events.TimerStepTimeout, d.AttemptRef, d.Deadline}, !d.Deadline.IsZero()
	case *events.CompensationScheduled:
		return Timer{events.TimerCompensationTimeout, d.AttemptRef, d.Deadline}, !d.Deadline.IsZero()
	case *events.StepRetryScheduled:
		ref := d.AttemptRef
		ref.Attempt = d.NextAttempt
		return Timer{events.TimerStepRetry, ref, d.DueAt}, true
	case *events.CompensationRetryScheduled:
		ref := d.AttemptRef
		ref.Attempt = d.NextAttempt
		return Timer{events.TimerCompensationRetry, ref, d.DueAt}, true
	case *events.ExecutionStarted:
		return Timer{events.TimerExecutionDeadline, events.AttemptRef{Run: d.Run}, d.Deadline}, !d.Deadline.IsZero()
	case *events.ExecutionRetryScheduled:
		return Timer{events.TimerExecutionRetry, events.AttemptRef{Run: d.Run}, d.DueAt}, true
	}
	return Timer{}, false
}

func (t *Timers) handle(ctx context.Context, d consume.Delivery) consume.Outcome {
	ev, err := events.Decode(d.Msg.Data())
	if err != nil {
		return consume.DeadLetter(err.Error())
	}
	id := ev.ExecutionID()
	if sid, _, err := events.ParseExecutionSubject(d.Msg.Subject()); err != nil || sid != id {
		return consume.DeadLetter(fmt.Sprintf("event of execution %q on subject %s", id, d.Msg.Subject()))
	}
	log := t.log.With("execution_id", id, "event", ev.Type)
	timer, ok := TimerOf(ev)
	if !ok {
		if ev.Type.IsExecution() {
			// An end of a run, delivered under an older version's filter, among others.
			log.Debug("event asks for no timer")
			return consume.Ack()
		}
		return consume.DeadLetter(fmt.Sprintf("%s is not an execution event", ev.Type))
	}
	if timer.Kind == events.TimerExecutionDeadline && timer.At.Sub(ev.Time) > t.cfg.ScheduleAfter {
		// Nearly every run ends long before its deadline (an hour by default). Its schedule
		// would be stored and purged again; instead the started event waits ScheduleAfter on
		// the consumer, and a run that has ended by then needs no deadline.
		if hold := ev.Time.Add(t.cfg.ScheduleAfter).Sub(t.cfg.Now()); hold > 0 {
			return consume.Hold(hold)
		}
		over, err := t.runOver(ctx, id, timer.Ref.Run)
		if err != nil {
			return consume.Retry(err, 0)
		}
		if over {
			// No timer needed: done, as a timer set is (the fault hook's point alike).
			if err := t.cfg.Hooks.At(ctx, faults.TimersSet, id); err != nil {
				return consume.Abandon()
			}
			log.Debug("run ended before its deadline was scheduled", "run", timer.Ref.Run)
			return consume.Ack()
		}
	}
	fire := execution.Fire(id, timer.Kind, timer.Ref, timer.At)
	log = log.With("timer", timer.Kind, "step_id", timer.Ref.StepID, "attempt", timer.Ref.Attempt, "due", timer.At)
	wait := timer.At.Sub(t.cfg.Now())
	switch {
	case wait <= 0:
		sctx, span := t.span(ctx, "timer.fire", d, id, timer)
		err := inbox.Publish(sctx, t.js, fire)
		endSpan(span, err)
		if err != nil {
			return consume.Retry(err, 0)
		}
		if err := t.cfg.Hooks.At(ctx, faults.TimersSet, id); err != nil {
			return consume.Abandon()
		}
		log.Debug("timer fired")
		return consume.Ack()
	case wait <= t.cfg.ScheduleAfter:
		return consume.Hold(wait)
	}
	sctx, span := t.span(ctx, "timer.schedule", d, id, timer)
	err = t.schedule(sctx, fire, timer.At)
	endSpan(span, err)
	if err != nil {
		return consume.Retry(err, 0)
	}
	if err := t.cfg.Hooks.At(ctx, faults.TimersSet, id); err != nil {
		return consume.Abandon()
	}
	log.Debug("timer scheduled")
	return consume.Ack()
}

// span starts the span of a timer's fire or schedule when tracing is on and the event that
// set it carries a trace context; else it returns ctx and nil.
func (t *Timers) span(ctx context.Context, name string, d consume.Delivery, id string, timer Timer) (context.Context, trace.Span) {
	if !t.cfg.Tracer.On() {
		return ctx, nil
	}
	hdr := d.Msg.Headers()
	if len(hdr[tracing.HeaderTraceparent]) == 0 {
		return ctx, nil
	}
	attrs := []attribute.KeyValue{tracing.ExecutionID.String(id), attribute.String("memmie.timer", string(timer.Kind)),
		attribute.Int("memmie.run", timer.Ref.Run)}
	if timer.Ref.StepID != "" {
		attrs = append(attrs, tracing.StepID.String(timer.Ref.StepID), tracing.Attempt.Int(timer.Ref.Attempt))
	}
	return t.cfg.Tracer.Start(ctx, name, hdr, trace.WithAttributes(attrs...))
}

// endSpan ends span, if any, with the error of what it recorded.
func endSpan(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "timer not set")
	}
	span.End()
}

// schedule stores the timer as a message schedule that the server publishes to the
// execution's inbox at its time, rounded up to the second (schedules have 1-second
// granularity; one that fires early is held by the orchestrator).
func (t *Timers) schedule(ctx context.Context, fire events.Event, at time.Time) error {
	id := fire.ExecutionID()
	subject, err := streams.TimerScheduleSubject(id, fire.ID)
	if err != nil {
		return err
	}
	target := events.InboxSubject(id)
	data, err := events.Marshal(fire)
	if err != nil {
		return err
	}
	sec := at.UTC().Truncate(time.Second)
	if sec.Before(at) {
		sec = sec.Add(time.Second)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(HeaderSchedule, "@at "+sec.Format(time.RFC3339))
	msg.Header.Set(HeaderScheduleTarget, target)
	// The schedule's own id, so that storing it twice stores it once. The server strips it
	// from the command it publishes.
	msg.Header.Set(jetstream.MsgIDHeader, fire.ID)
	if _, err := t.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(streams.Inbox)); err != nil {
		return fmt.Errorf("schedule timer %s of %s: %w", fire.ID, id, err)
	}
	return nil
}

// runOver reports whether run has ended, from the last of the execution's own events
// (memmie.executions.<id>.*, not its steps'): an end of that run or a later one, or a later
// run's start. Anything else, a stale answer of a lagging replica among them, counts as
// running: the deadline is then scheduled, and fires into a state that ignores it if the run
// has ended meanwhile.
func (t *Timers) runOver(ctx context.Context, id string, run int) (bool, error) {
	subject := strings.TrimSuffix(events.SubjectExecutions, ">") + id + ".*"
	m, err := stream.LastBySubject(ctx, t.js, t.cfg.Executions, subject)
	if err != nil {
		return false, fmt.Errorf("has run %d of %s ended: %w", run, id, err)
	}
	ev, err := events.Decode(m.Data)
	if err != nil {
		return false, nil
	}
	switch d := ev.Data.(type) {
	case *events.ExecutionCompleted:
		return d.Run >= run, nil
	case *events.ExecutionFailed:
		return d.Run >= run, nil
	case *events.ExecutionCancelled:
		return d.Run >= run, nil
	case *events.ExecutionRetryScheduled:
		return d.Run >= run, nil
	case *events.ExecutionRequeued:
		return d.Run > run, nil
	case *events.ExecutionStarted:
		return d.Run > run, nil
	}
	return false, nil
}
