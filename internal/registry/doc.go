// Package registry registers definitions (schemas, workflows, providers) on the
// MEMMIE_DEFINITIONS stream and keeps every process's view of them. It is the one way in for
// every registration: `memmie dev` at start-up, `memmie serve --definitions`, and the HTTP
// API's PUT and DELETE (which `memmie apply` calls).
//
//	reg, err := registry.New(js, registry.Config{Logger: log})
//	if err := reg.Start(ctx); err != nil { ... } // replays the stream, then follows it
//	defer reg.Stop(ctx)
//
//	set, err := definitions.Load("definitions")
//	results, err := reg.RegisterSet(ctx, set) // or reg.Register(ctx, defs...); definitions.Problems when invalid
//
//	rev, ok := reg.Current(definitions.KindWorkflow, "blob_summary")
//	// rev.Revision, rev.Def.(*definitions.Workflow), rev.Canonical, rev.Active
//	old, ok := reg.Get(definitions.KindWorkflow, "blob_summary", 1)
//
// Writing. Register validates first: each definition on its own (workflows are compiled) and
// all of them together with the active registered definitions (a workflow's schemas, a
// provider's workflows); an invalid set registers nothing and the error is
// definitions.Problems, each problem's File naming "<kind>s/<id>" when the definition was not
// read from a file. Then it publishes schemas, then workflows, then providers, one
// memmie.definition.registered event per changed definition on
// memmie.definitions.<kind>s.<id>, each expecting the last sequence of its subject and carrying
// a Nats-Msg-Id derived from (kind, id, revision, canonical JSON). On a conflict (another
// process registered the same id first) it catches up and decides again, so two racing
// registrations become revisions N+1 and N+2 and none is lost. A definition whose canonical
// JSON equals its active current revision is a no-op (Changed false); a changed one, or one
// registered again after a deactivation, becomes revision N+1. The set is validated as a
// whole, but published definition by definition: a crash half-way leaves a prefix registered,
// which is consistent because of the order, and registering the set again completes it.
//
// Validation reads this process's view, caught up with the stream when Register starts; a
// definition another process deactivates in the moment between validation and publication is
// not seen. The engine checks again, at each start, that a workflow and its schemas are active.
//
// Deactivate appends memmie.definition.deactivated: the definition keeps its revisions (Get
// still serves them) but Current reports Active false. Executions already running go on: they
// pinned their workflow when they started. Deactivating a schema that an active workflow names,
// or a workflow that an active provider binds, fails with ErrInUse.
//
// Reading. The view is fed by an ordered consumer of the whole stream, from its first message,
// then live: every process sees registrations made by the others. Register and Deactivate
// return once this process's view holds their writes (read-your-writes); WaitFor(ctx, seq)
// does the same for any stream sequence. Revision values and their Def are shared: never
// modify them.
//
// The package never creates the stream (stream.EnsureStreams does, at start-up) and never
// deletes a message.
package registry
