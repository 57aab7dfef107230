// Package layering holds no code: its tests enforce the direction of memmie's dependencies
// (see STYLE's "Dependencies point one way"), with `go list -deps` over the real packages.
//
//   - events is the vocabulary: it imports nothing of memmie and no NATS or HTTP code.
//   - definitions (with definitions/eval) imports events at most.
//   - internal/execution, the core, imports no NATS, HTTP or Postgres code, and of memmie only
//     events and definitions.
//   - handlers never import the API, the registry or the CLI.
package layering
