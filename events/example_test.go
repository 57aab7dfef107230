package events_test

import (
	"fmt"
	"time"

	"github.com/memmie/memmie/events"
)

func ExampleNewExecution() {
	at := time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)
	ev := events.NewExecution(&events.CancelRequested{ExecutionID: "ex-1", Run: 1, Reason: "user"}, events.SourceAPI, at)
	b, err := events.Marshal(ev) // publish on ev.Subject with Nats-Msg-Id: ev.ID
	if err != nil {
		panic(err)
	}
	got, err := events.Decode(b)
	if err != nil {
		panic(err)
	}
	fmt.Println(got.Subject)
	fmt.Println(got.ID == events.ID("ex-1", "run/1/cancel_requested"))
	fmt.Println(got.Data.(*events.CancelRequested).Reason)
	// Output:
	// memmie.executions.ex-1.cancel_requested
	// true
	// user
}
