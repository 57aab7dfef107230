package bench

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
)

// The bench's definitions and service.
const (
	serviceName  = "bench"
	stepsID      = "bench_steps"
	blobWorkflow = "bench_blob"
	blobProvider = "bench-blobs"
	// blobDeltas are the deltas of a blob the bench creates: the created event's, and the
	// one its workflow's output writes.
	blobDeltas = 2
)

// stepsWorkflow is a workflow of n api_call steps, each passing the last one's output on.
func stepsWorkflow(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "id: %s\nsteps:\n", stepsID)
	for i := 1; i <= n; i++ {
		in := "{n: $.input.n}"
		if i > 1 {
			in = fmt.Sprintf("{prev: $.steps.s%d.output.ok}", i-1)
		}
		fmt.Fprintf(&b, "  - {id: s%d, type: api_call, service: %s, endpoint: /s%d, input_map: %s}\n", i, serviceName, i, in)
	}
	return b.String()
}

// The blob events' workflow: no HTTP, one delta.
const (
	blobWorkflowYAML = `
id: ` + blobWorkflow + `
steps:
  - id: tag
    type: transform
    input_map:
      delta_operations:
        - op: add
          path: /metadata/benched
          value: $.input.blob.version
output_map:
  delta_operations: $.steps.tag.output.delta_operations
`
	blobProviderYAML = `
provider:
  id: ` + blobProvider + `
workflows:
  - workflow_id: ` + blobWorkflow + `
    triggers:
      - event: onCreate
`
)

// definitionsOf parses the bench's definitions.
func definitionsOf(steps int) ([]definitions.Definition, error) {
	var out []definitions.Definition
	for i, src := range []string{stepsWorkflow(steps), blobWorkflowYAML, blobProviderYAML} {
		def, err := definitions.Parse(fmt.Sprintf("bench-%d.yaml", i), []byte(src), "")
		if err != nil {
			return nil, fmt.Errorf("bench: parse its definitions: %w", err)
		}
		out = append(out, def)
	}
	return out, nil
}

// okBody is every answer of the service.
var okBody = []byte(`{"ok": true}`)

// startService serves the api_call steps on loopback: every call reads its request and
// answers at once, the same constant work for every call.
func startService() (*url.URL, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("bench: listen for its service: %w", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(okBody)
	})}
	go func() { _ = srv.Serve(ln) }()
	u := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	return u, func() { _ = srv.Close() }, nil
}

// outcome is how a waited-for thing ended, and when it was received.
type outcome struct {
	at     time.Time
	failed bool
}

// ends counts the executions that end (completed or failed), and tells the waiters of
// particular ones.
type ends struct {
	subs      []*nats.Subscription
	completed atomic.Int64
	failed    atomic.Int64
	// onEnd, when set, is called for every end (the saturation run's slots).
	onEnd atomic.Pointer[func()]

	mu      sync.Mutex
	waiters map[string]chan outcome
}

// watchEnds subscribes to the executions' completed and failed events.
func watchEnds(nc *nats.Conn) (*ends, error) {
	e := &ends{waiters: map[string]chan outcome{}}
	for _, tail := range []string{"completed", "failed"} {
		failed := tail == "failed"
		sub, err := nc.Subscribe("memmie.executions.*."+tail, func(m *nats.Msg) { e.ended(m.Subject, failed) })
		if err != nil {
			e.stop()
			return nil, fmt.Errorf("bench: subscribe to the executions' ends: %w", err)
		}
		// A dropped end would hold a slot of the saturation run for ever.
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			e.stop()
			return nil, fmt.Errorf("bench: subscribe to the executions' ends: %w", err)
		}
		e.subs = append(e.subs, sub)
	}
	return e, nil
}

func (e *ends) ended(subject string, failed bool) {
	at := time.Now()
	if failed {
		e.failed.Add(1)
	} else {
		e.completed.Add(1)
	}
	if f := e.onEnd.Load(); f != nil {
		(*f)()
	}
	id, _, err := events.ParseExecutionSubject(subject)
	if err != nil {
		return
	}
	e.mu.Lock()
	ch, ok := e.waiters[id]
	delete(e.waiters, id)
	e.mu.Unlock()
	if ok {
		ch <- outcome{at: at, failed: failed}
	}
}

// expect returns the channel that receives the end of execution id, once. Call it before the
// execution starts.
func (e *ends) expect(id string) <-chan outcome {
	ch := make(chan outcome, 1)
	e.mu.Lock()
	e.waiters[id] = ch
	e.mu.Unlock()
	return ch
}

// forget drops the waiter of id (one that was lost).
func (e *ends) forget(id string) {
	e.mu.Lock()
	delete(e.waiters, id)
	e.mu.Unlock()
}

func (e *ends) ended64() int64 { return e.completed.Load() + e.failed.Load() }

func (e *ends) stop() {
	for _, s := range e.subs {
		_ = s.Unsubscribe()
	}
}

// deltaWaits tells the waiters of a blob when its last delta (version blobDeltas) arrives.
type deltaWaits struct {
	sub     *nats.Subscription
	mu      sync.Mutex
	waiters map[string]chan outcome
}

func watchDeltas(nc *nats.Conn) (*deltaWaits, error) {
	d := &deltaWaits{waiters: map[string]chan outcome{}}
	sub, err := nc.Subscribe(events.SubjectDeltas, d.delta)
	if err == nil {
		err = sub.SetPendingLimits(-1, -1)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: subscribe to the deltas: %w", err)
	}
	d.sub = sub
	return d, nil
}

func (d *deltaWaits) delta(m *nats.Msg) {
	at := time.Now()
	blobID, err := events.ParseDeltaSubject(m.Subject)
	if err != nil {
		return
	}
	d.mu.Lock()
	ch, ok := d.waiters[blobID]
	d.mu.Unlock()
	if !ok {
		return
	}
	ev, err := events.Decode(m.Data)
	if err != nil {
		return
	}
	delta, ok := ev.Data.(*events.Delta)
	if !ok || delta.Version < blobDeltas {
		return
	}
	d.mu.Lock()
	_, still := d.waiters[blobID]
	delete(d.waiters, blobID)
	d.mu.Unlock()
	if still {
		ch <- outcome{at: at}
	}
}

func (d *deltaWaits) expect(blobID string) <-chan outcome {
	ch := make(chan outcome, 1)
	d.mu.Lock()
	d.waiters[blobID] = ch
	d.mu.Unlock()
	return ch
}

func (d *deltaWaits) forget(blobID string) {
	d.mu.Lock()
	delete(d.waiters, blobID)
	d.mu.Unlock()
}

func (d *deltaWaits) stop() { _ = d.sub.Unsubscribe() }
