// Package metrics exposes an engine's counters in the Prometheus text format.
//
//	h := metrics.Handler(metrics.NewRegistry(eng)) // serve on GET /metrics
//
// Every value is read from the engine when /metrics is scraped (engine.Stats and
// engine.Queue): the package keeps no counter of its own, so nothing is counted twice and a
// scrape always agrees with the engine. Counters count from the engine's Open, as its Stats
// do; a restarted process starts them again from zero, which Prometheus reads as a reset.
//
// The package only reads: it never writes to a stream and never changes the engine.
package metrics
