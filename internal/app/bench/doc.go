// Package bench measures memmie on one machine: the ceilings of the parts it stands on
// (JetStream publishes, Postgres upserts and COPY), then, in the same run and with the server
// settings memmie dev uses, the throughput of a workflow of api_call steps at saturation, the
// latency of executions and of blob events, the projections' lag and rebuild rate, and the
// resources the process used. `memmie bench` runs it and prints its Report.
//
//	rep, err := bench.Run(ctx, bench.Config{URL: srv.ClientURL(), Pool: pool, Projections: ps})
//	rep.WriteTable(os.Stdout)
//
// It is a composition of the real parts (the engine, the registry, the projections' runners,
// the services caller) against a NATS server and a migrated database it is given, and an HTTP
// service of its own that answers every call at once with constant work. It never asserts a
// speed: it reports what it measured. It registers its own definitions, runs tens of thousands
// of executions, publishes blob events, rebuilds the executions projection and writes a scratch
// schema (memmie_bench, dropped at the end): it belongs on a throwaway server and database,
// never on ones that hold data.
package bench
