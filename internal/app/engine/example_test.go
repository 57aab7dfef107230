package engine_test

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
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/registry"
)

// Example runs a one-step transform workflow on an embedded server, end to end.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "memmie-example")
	defer os.RemoveAll(dir)
	srv, err := natsserver.Start(natsserver.Config{StoreDir: dir, Port: -1})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, _ := nats.Connect(srv.ClientURL())
	defer nc.Close()
	js, _ := jetstream.New(nc)

	// The registry reads the definitions stream, so the streams come first.
	if err := stream.EnsureStreams(ctx, js, engine.StreamConfigs(streams.Options{})); err != nil {
		panic(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	reg, _ := registry.New(js, registry.Config{Logger: quiet})
	_ = reg.Start(ctx)
	defer reg.Stop(ctx)
	wf, _ := definitions.ParseWorkflow("greet.yaml", []byte(`
id: greet
steps:
  - id: hello
    type: transform
    input_map: {greeting: "hello {$.input.name}"}
`))
	if _, err := reg.Register(ctx, wf); err != nil {
		panic(err)
	}

	eng, _ := engine.New(js, engine.Config{Definitions: reg, Logger: quiet})
	if err := eng.Open(ctx); err != nil {
		panic(err)
	}
	defer eng.Close(ctx)
	id, _, err := eng.Start(ctx, engine.StartRequest{WorkflowID: "greet", Input: []byte(`{"name": "memmie"}`)})
	if err != nil {
		panic(err)
	}
	for range 500 {
		s, err := eng.Execution(ctx, id)
		if err == nil && s.Status.Terminal() {
			fmt.Println(s.Status, s.Output)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Output: completed map[greeting:hello memmie]
}
