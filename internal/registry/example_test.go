package registry_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/registry"
)

// Register a set of definitions, change one, and read both revisions.
func Example() {
	dir, _ := os.MkdirTemp("", "memmie-registry-example")
	defer os.RemoveAll(dir)
	srv, err := natsserver.Start(natsserver.Config{Port: -1, StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, _ := nats.Connect(srv.ClientURL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := stream.EnsureStreams(ctx, js, streams.Configs(streams.Options{})); err != nil {
		panic(err)
	}

	reg, _ := registry.New(js, registry.Config{Logger: slog.New(slog.DiscardHandler)})
	if err := reg.Start(ctx); err != nil {
		panic(err)
	}
	defer reg.Stop(ctx)

	schema := &definitions.Schema{ID: "greeting", Type: "input", Definition: map[string]any{"type": "string"}}
	wf, _ := definitions.ParseWorkflow("hello.yaml", []byte(`
id: hello
input_schema_id: greeting
steps:
  - id: greet
    type: transform
    input_map: {text: "hello {$.input}"}
`))
	results, err := reg.Register(ctx, wf, schema) // schemas are registered first
	if err != nil {
		panic(err)
	}
	for _, r := range results {
		fmt.Println(r.Kind, r.ID, r.Revision, r.Changed)
	}

	wf.Name = "Hello"
	results, _ = reg.Register(ctx, wf)
	fmt.Println(results[0].Kind, results[0].ID, results[0].Revision, results[0].Changed)

	cur, _ := reg.Current(definitions.KindWorkflow, "hello")
	old, _ := reg.Get(definitions.KindWorkflow, "hello", 1)
	fmt.Printf("current %d %q, first %d %q\n", cur.Revision, cur.Def.(*definitions.Workflow).Name,
		old.Revision, old.Def.(*definitions.Workflow).Name)
	// Output:
	// schema greeting 1 true
	// workflow hello 1 true
	// workflow hello 2 true
	// current 2 "Hello", first 1 ""
}
