// Package trigger is the functional core of triggers: given the registered providers, a blob
// event and the blob after it, Match returns the executions to start, each with a
// deterministic id, so that no blob event starts a workflow twice. It performs no I/O and
// never depends on map order or on the order of providers. It must never import NATS, HTTP or
// Postgres code. The conditions themselves are definitions' (Trigger.Matches).
package trigger
