// Package metrics exposes an engine's counters in the Prometheus text format.
//
//	calls := metrics.NewCalls(caller)                     // the engine's Config.Caller
//	eng, err := engine.New(js, engine.Config{Caller: calls, ...})
//	h := metrics.Handler(metrics.NewRegistry(eng, calls)) // serve on GET /metrics
//
// The engine's counters are read from it when /metrics is scraped (engine.Stats and
// engine.Queue): the collector keeps no copy of them, so nothing is counted twice and a
// scrape always agrees with the engine. They count from the engine's Open, as its Stats do; a
// restarted process starts them again from zero, which Prometheus reads as a reset. The
// histograms are fed as things happen: memmie_step_call_duration_seconds and
// memmie_step_calls_total (by status class) by Calls as the runner's calls return, the
// execution durations by Executions, the orchestrator's Observer, as it records each end, and
// memmie_blob_event_to_last_delta_seconds by BlobOutputs, the writer of blob histories'
// Observer, as it appends the deltas of a triggered execution. Projections reads the projections' tables and the streams at each
// scrape: the executions by status and each projection's lag.
//
//	durations := metrics.NewExecutions() // engine.Config.Orchestrator.Observer
//	outputs := metrics.NewBlobOutputs()  // engine.Config.Blobs.Observer
//	projs, err := metrics.NewProjections(metrics.ProjectionsConfig{JS: js, Runners: runners, Tables: views.New(pool)})
//	h := metrics.Handler(metrics.NewRegistry(eng, calls, durations, outputs, projs))
//
// The package only reads: it never writes to a stream and never changes the engine.
package metrics
