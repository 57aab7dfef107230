// Package ui is memmie's web UI: server-rendered pages (html/template, embedded with
// embed.FS) under /ui/ on the API's HTTP server, with a small script of its own and
// Server-Sent Events for the live pages. It reads what the API reads, with the same
// functions (the projections' views, the engine, the registry): the executions list and the
// queue, one execution (its timeline of step attempts, compensations and backoffs, and its
// raw history a page at a time), one blob (its versions a page at a time, the document at a
// version, a diff), dead letters and definitions; cancel, retry and redrive call what the
// API's POST handlers call.
//
// With a token (--api-token), a browser opens any page once with ?token=<token>: the UI
// keeps it in an HttpOnly, SameSite=Strict cookie and takes it out of the address. A request
// with that cookie or the API's Authorization: Bearer header is let in; any other is answered
// 401.
//
// Live pages: the executions list and an execution's page each hold an EventSource on a
// stream of the UI (/ui/executions/live, /ui/executions/{id}/live) that checks every second
// (Config.LivePoll) whether what the page shows moved (the list's page, the execution's
// last stream sequence and how far the projections have applied it), and says "changed";
// the script then fetches the part again.
package ui
