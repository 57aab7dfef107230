// Package api serves memmie's HTTP API (the contract's "HTTP API") from the streams: the
// definitions come from the registry's view of MEMMIE_DEFINITIONS, the executions from their
// histories on MEMMIE_EXECUTIONS, through the engine; the lists, and one execution when the
// projections hold all of it, and the blobs come from the projections' tables in Postgres,
// through Config.Views.
//
//	h, err := api.New(api.Config{Registry: reg, Engine: eng, Views: views.New(pool), Logger: log})
//	srv := api.NewServer(h, api.ServerConfig{Addr: "127.0.0.1:8080"}) // timeouts and limits: see ServerConfig
//
// Endpoints:
//
//	PUT    /v1/{schemas|workflows|providers}/{id}  register (YAML or JSON body) -> 200 {"kind","id","revision","changed","active"}
//	DELETE /v1/{schemas|workflows|providers}/{id}  deactivate -> 200 {"kind","id","revision","changed","active":false}
//	GET    /v1/{schemas|workflows|providers}/{id}  current revision (?revision=N an older one), deactivated ones too
//	GET    /v1/{schemas|workflows|providers}       {"items": [current revision of each, deactivated ones too]}
//	POST   /v1/executions                          {"workflow_id","input","priority","idempotency_key","max_retries"} -> 202 {"execution_id","created"}
//	GET    /v1/executions                          {"executions": [rows, newest first], "next"}: ?status=, ?workflow_id=, ?limit= (50, at most 500), ?cursor=<next>
//	GET    /v1/executions/{id}                     the execution's state; Memmie-Source: projection or stream
//	GET    /v1/executions/{id}?wait=30s            long poll: the state once the execution ended or the wait ran out (at most Config.MaxWait); Memmie-Ended: true or false
//	GET    /v1/executions/{id}/watch               Server-Sent Events: "state" now and after each change, "end" with the final state
//	GET    /v1/executions/{id}/events              {"events": [CloudEvents envelopes], "next"}: ?limit= (100, at most 1000), ?after=<next>
//	POST   /v1/executions/{id}/cancel              {"reason"} (optional) -> 202
//	POST   /v1/executions/{id}/retry               -> 202
//	GET    /v1/queue                               {"queue": [queued_executions rows, priority DESC, queued_at, id], "next"}: ?status= (pending and running), ?limit=, ?cursor=<next>
//	GET    /v1/blobs/{id}                          the blob (blob.State's JSON) at its last version, ?version=N at N
//	GET    /v1/blobs/{id}/deltas                   {"deltas": [delta data, in version order], "next"}: ?limit= (100, at most 1000), ?after=<next> (a version)
//	GET    /v1/blobs/{id}/diff                     {"blob_id", "from", "to", "patch": [RFC 6902 ops]}: ?to= (the last), ?from= (to-1); version 0 is before the create
//	GET    /v1/deadletter                          {"dead_letters": [dead_letters rows without headers and data, newest first], "next"}: ?source=, ?limit=, ?cursor=<next>
//	GET    /v1/deadletter/{id}                     the row with "headers", "data" (base64) and "redrivable" ("not_redrivable": why not)
//	POST   /v1/deadletter/{id}/redrive             -> 202 {"id","subject","stream","seq","msg_id","duplicate","redriven_at"}; 200 when "duplicate"
//	GET    /healthz, /readyz                       liveness; readiness (engine, registry and Config.Postgres)
//	GET    /metrics                                Config.Metrics (package metrics), when set
//
// With Config.Token set, every request but those of /healthz, /readyz and /metrics needs
// "Authorization: Bearer <token>" (compared in constant time), or is answered 401. A 503 of
// /readyz names the first dependency down in "dependency" (nats, streams, handlers,
// definitions, postgres) and at the start of its message.
//
// JSON bodies need Content-Type application/json (charset=utf-8 allowed); a definition's PUT
// takes application/json or application/yaml (also application/x-yaml, text/yaml). A start
// whose input breaks the workflow's input schema starts nothing. The same idempotency_key with
// the same workflow_id, input, priority and max_retries answers the same execution, "created":
// false; with any of them different it is a conflict (as Step Functions answers
// ExecutionAlreadyExists). GET /v1/executions/{id}, with Config.Views, asks the stream leader
// for the execution's last sequence and answers from the projections (an ExecutionView) when
// executions, queued_executions and execution_steps have all applied the stream up to it, in
// one snapshot; otherwise, or when Postgres fails, the engine folds the history (an
// execution.State). Either way the answer holds every event recorded before the request, as
// Temporal's DescribeWorkflowExecution does; the Memmie-Source header says which answered.
// With Config.JetStream the stream's answer comes from a bounded cache of folded states
// (Config.CacheSize), validated by that last sequence: an execution that has not moved loads
// nothing, one that moved loads only the messages after the cached state.
//
// ?wait= and /watch follow the execution's subjects with an ordered consumer, from the cached
// state's sequence, folding each message into it with execution.State.Apply; the consumer is
// deleted when the answer ends or the client goes. They need Config.JetStream (501
// not_following without it), and at most Config.MaxWatchers run at once (503, Retry-After: 1, past it). Their
// answers are the stream's state (Memmie-Source: stream).
// The events come a page at a time; "next", present while more
// followed when the page was read, is the "after" of the next page.
//
// The blobs come from the blobs projection alone, which follows MEMMIE_DELTAS within moments:
// a blob created a moment ago may be 404 for that moment. ?version=N is rebuilt from the
// projection's nearest snapshot below N by blob.State.Apply (views.Views.BlobAt).
//
// Every error is {"error": {"code", "message"}}; an invalid definition or input adds
// "problems", each {"file","line","field","message"} (for an input, "field" is a JSON pointer
// into it). A 500 says only "internal error (request id X)": the error is logged with
// request_id X, and the answer's X-Request-Id header holds it too. Codes and statuses:
//
//	400 bad_request          malformed body, parameter or id
//	401 unauthorized         no or another bearer token, when Config.Token is set
//	404 not_found            no such definition, revision, execution, dead letter, blob, blob version or route
//	404 workflow_not_found   POST /v1/executions of a workflow never registered
//	405 method_not_allowed
//	409 in_use               DELETE of a definition that an active one names
//	409 workflow_inactive    POST /v1/executions of a deactivated workflow (or schema)
//	409 invalid_state        cancel of an ended execution, retry of one that did not fail
//	409 idempotency_conflict the idempotency_key names an execution started with other parameters
//	413 too_large            a body over MaxBodyBytes
//	415 unsupported_media_type  a body without the Content-Type its endpoint takes
//	422 invalid_definition   the definition, or the set it would make, is invalid
//	422 invalid_input        the input breaks the workflow's input schema
//	422 not_redrivable       a redrive of what may not be sent back (deadletter.Target says why)
//	500 internal             anything else
//	501 not_following        ?wait= or /watch without Config.JetStream
//	503 unavailable          too many watchers (Config.MaxWatchers), no engine configured, no database (Config.Views) for a list, a dead letter or a blob, the
//	                         database down (dependency "postgres"), no Config.Redriver for a redrive, or not
//	                         ready (/readyz)
//
// A deactivated definition is still served by GET, with "active": false, because its
// revisions stay in the history and running executions may use them; only a definition never
// registered is 404. A PUT answers once this process's view holds the new revision, so a GET
// that follows it on the same process sees it.
//
// A redrive sends the dead letter's original message back to its subject through
// Config.Redriver (deadletter.Writer.Redrive), which also records it on MEMMIE_DEADLETTER; a
// second one within the target stream's duplicate window sends nothing new.
//
// The package translates HTTP to registry, engine, views and redriver calls, and reads the
// executions stream itself for the cache and the followers: the only state it holds is that
// cache, and it never writes to a stream.
package api
