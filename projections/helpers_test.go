package projections_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/projections"
)

const waitFor = 60 * time.Second

// setup starts a JetStream server with memmie's streams.
func setup(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, _, js := natstest.Run(t)
	require.NoError(t, stream.Ensure(context.Background(), js, streams.Configs(streams.Options{}), nil))
	return js
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// execID is the id of the i-th execution of histories.
func execID(i int) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "exec-%d", i)).String()
}

// histories builds n executions' histories, of four kinds by i%4: completed; failed; failed,
// requeued and completed on its second run; cancelled while queued. Steps events sit in
// between, for the projection to leave alone.
func histories(n int) [][]events.Event {
	out := make([][]events.Event, n)
	for i := range n {
		id := execID(i)
		at := t0.Add(time.Duration(i) * time.Second)
		ev := func(d events.ExecutionData, k int) events.Event {
			return events.NewExecution(d, "test", at.Add(time.Duration(k)*time.Millisecond))
		}
		h := []events.Event{ev(&events.ExecutionQueued{
			ExecutionID: id, WorkflowID: fmt.Sprintf("wf-%d", i%3), WorkflowRevision: 1 + i%2,
			Workflow: []byte(`{}`), InputSchema: []byte(`null`), OutputSchema: []byte(`null`),
			Input: map[string]any{"n": float64(i)}, Priority: i % 100, ProviderID: "prov", BlobID: "",
		}, 0)}
		switch i % 4 {
		case 0:
			h = append(h,
				ev(&events.ExecutionStarted{ExecutionID: id, Run: 1}, 1),
				ev(&events.StepSucceeded{ExecutionID: id, AttemptRef: events.AttemptRef{Run: 1, StepID: "s", Attempt: 1}, Output: 1}, 2),
				ev(&events.ExecutionCompleted{ExecutionID: id, Run: 1, Output: map[string]any{"ok": true}}, 3))
		case 1:
			h = append(h,
				ev(&events.ExecutionStarted{ExecutionID: id, Run: 1}, 1),
				ev(&events.ExecutionFailed{ExecutionID: id, Run: 1, Error: events.ExecutionError{Code: "step_failed", Message: "boom"}}, 2))
		case 2:
			h = append(h,
				ev(&events.ExecutionStarted{ExecutionID: id, Run: 1}, 1),
				ev(&events.ExecutionFailed{ExecutionID: id, Run: 1, Error: events.ExecutionError{Code: "step_failed", Message: "boom"}}, 2),
				ev(&events.ExecutionRequeued{ExecutionID: id, Run: 2, Manual: true}, 3),
				ev(&events.ExecutionStarted{ExecutionID: id, Run: 2}, 4),
				ev(&events.ExecutionCompleted{ExecutionID: id, Run: 2, Output: "second"}, 5))
		case 3:
			h = append(h, ev(&events.ExecutionCancelled{ExecutionID: id, Run: 1, Reason: "no"}, 1))
		}
		out[i] = h
	}
	return out
}

// interleave orders the histories' events as concurrent executions would write them.
func interleave(hs [][]events.Event) []events.Event {
	var out []events.Event
	for k := 0; ; k++ {
		more := false
		for _, h := range hs {
			if k < len(h) {
				out, more = append(out, h[k]), true
			}
		}
		if !more {
			return out
		}
	}
}

// publish appends the events to MEMMIE_EXECUTIONS and returns the last sequence.
func publish(t *testing.T, js jetstream.JetStream, evs []events.Event) uint64 {
	t.Helper()
	ctx := context.Background()
	var last uint64
	for _, ev := range evs {
		data, err := events.Marshal(ev)
		require.NoError(t, err)
		ack, err := stream.Append(ctx, js, streams.Executions, []stream.Msg{{Subject: ev.Subject, Data: data, ID: ev.ID}}, stream.Expect{})
		require.NoError(t, err)
		last = ack.LastSeq
	}
	return last
}

// running is a Runner started in the background.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *running) stop() {
	r.cancel()
	<-r.done
}

func start(t *testing.T, r *projections.Runner) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rr := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rr.done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	t.Cleanup(rr.stop)
	return rr
}

func newRunner(t *testing.T, p projections.Projection, pool *pgxpool.Pool, js jetstream.JetStream, cfg projections.Config) *projections.Runner {
	t.Helper()
	cfg.Pool, cfg.JS = pool, js
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg.RetryMin, cfg.StandbyWait = 20*time.Millisecond, 50*time.Millisecond
	r, err := projections.NewRunner(p, cfg)
	require.NoError(t, err)
	return r
}

func checkpoint(t *testing.T, pool *pgxpool.Pool, projection string) uint64 {
	t.Helper()
	var last int64
	err := pool.QueryRow(context.Background(), `SELECT last_seq FROM projection_checkpoints WHERE projection = $1 AND stream = $2`,
		projection, streams.Executions).Scan(&last)
	if err == pgx.ErrNoRows {
		return 0
	}
	require.NoError(t, err)
	return uint64(last)
}

// caughtUp waits until the projection's checkpoint reaches seq.
func caughtUp(t *testing.T, pool *pgxpool.Pool, projection string, seq uint64) {
	t.Helper()
	require.Eventually(t, func() bool { return checkpoint(t, pool, projection) >= seq }, waitFor, 10*time.Millisecond,
		"checkpoint of %s never reached %d", projection, seq)
	require.Equal(t, seq, checkpoint(t, pool, projection))
}

// dump returns every row of the executions table as JSON, in id order.
func dump(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT row_to_json(e)::text FROM executions e ORDER BY execution_id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// counting wraps a projection and counts its applied events.
type counting struct {
	projections.Projection
	mu sync.Mutex
	n  int
}

func (c *counting) Apply(ctx context.Context, tx pgx.Tx, batch []projections.Event) error {
	if err := c.Projection.Apply(ctx, tx, batch); err != nil {
		return err
	}
	c.mu.Lock()
	c.n += len(batch)
	c.mu.Unlock()
	return nil
}

func (c *counting) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
