// Package triggers is the trigger matcher: it consumes the trigger requests the writer of blob
// histories appends on memmie.triggers.<blob_id> (stream MEMMIE_TRIGGERS, one per recorded
// blob event, events.TriggerRequested), matches each against the active providers
// (trigger.Match) and queues one execution per start, appending its events.ExecutionQueued to
// MEMMIE_EXECUTIONS expecting no event yet on the execution's subjects. The execution ids are
// deterministic, so a request handled twice starts nothing new.
//
// It runs on Watermill's message.Router, fed by memmie's consume loop on the durable consumer
// "triggers" (see subscriber), with Recoverer, CorrelationID (the request's correlation id, the
// blob event's, goes on the queued events) and PoisonQueue, and Watermill's Prometheus metrics
// when Config.Metrics is set:
//
//	m, err := triggers.New(js, triggers.Config{Providers: active, Prepare: prepare, DeadLetter: dl})
//	err = m.Start(ctx)
//	defer m.Stop(ctx)
//
// What can never be processed (a request it cannot read, a start whose input breaks the
// workflow's schema: ErrUnstartable) is dead-lettered on memmie.deadletter.triggers with the
// subject, stream and sequence it was stored under and the reason; the request's other starts
// are still made. A workflow not registered or not active (ErrSkipped) is skipped. Anything
// else (NATS or the executions' stream unavailable) is nacked and retried with a doubling
// backoff, for as long as it lasts; never dead-lettered. A panic is retried the same way, and
// dead-lettered once the request has panicked Config.MaxPanics times. A blob derived deeper
// than Config.Trigger's bound starts nothing.
//
// Why the router's subscriber is memmie's consume loop and not watermill-nats' JetStream
// subscriber (v2.1.3, which this package used first): that one closes its output channel while
// a NATS callback may still send on it, which the race detector reported in a CI run (and a
// select that picks the send panics the process); it sends no progress for the requests it
// holds, never calls SubscriberConfig.ConfigureConsumer (a ResourceInitializer had to make the
// durable consumer), hands requests over one at a time, prefetches 500 by default (held past
// AckWait), drains its NATS connection on close, and its default unmarshaler returns nil for a
// message with a multi-valued header, on which it panics. The consume loop pulls for free
// workers only, sends progress, retries with a doubling backoff, and closes the channel once
// no worker can send on it (TestStopWithRequestsInFlightLosesNothing). Watermill's publisher
// discards the PubAck, so the queued events are appended by memmie's own publisher
// (stream.Append).
//
// It never imports another handler or the engine: the engine gives it the active providers and
// Prepare, the part of its Start that builds a queued event.
package triggers
