package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Report is what a run measured. A part that was skipped is nil. Rates are per second,
// latencies in milliseconds, sizes in bytes.
type Report struct {
	Began    time.Time `json:"began"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`

	Ceilings    *Ceilings    `json:"ceilings,omitempty"`
	Saturation  *Saturation  `json:"saturation,omitempty"`
	Latency     *Latency     `json:"latency,omitempty"`
	Projections *Projections `json:"projections,omitempty"`
	Resources   *Resources   `json:"resources,omitempty"`

	TookSeconds float64 `json:"took_seconds"`
}

// Machine says where the run ran.
type Machine struct {
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	CPUs       int    `json:"cpus"`
	GoVersion  string `json:"go_version"`
	NATSServer string `json:"nats_server"`
	Postgres   string `json:"postgres"`
}

// Settings are the shape of the run.
type Settings struct {
	DurationSeconds        float64  `json:"duration_seconds"`
	Executions             int      `json:"executions"`
	Steps                  int      `json:"steps"`
	Loads                  []int    `json:"loads"`
	LatencyDurationSeconds float64  `json:"latency_duration_seconds"`
	Serial                 int      `json:"serial"`
	MaxRunning             int      `json:"max_running"`
	Partitions             int      `json:"partitions"`
	SyncAlways             bool     `json:"sync_always"`
	Skipped                []string `json:"skipped,omitempty"`
}

// Ceilings are the rates of the parts memmie stands on, measured on the same server and
// database before the workflow runs: JetStream publishes of an event-sized payload to a
// stream configured as MEMMIE_EXECUTIONS, each with a Nats-Msg-Id, and Postgres writes of
// rows shaped as the executions table's.
type Ceilings struct {
	PayloadBytes int `json:"payload_bytes"`
	// AsyncPublish keeps up to AsyncWindow publishes in flight.
	AsyncPublish float64 `json:"js_async_publish_msgs_per_s"`
	AsyncWindow  int     `json:"js_async_window"`
	// SyncPublish waits for each ack before the next; SyncPublishConcurrent does so on
	// Concurrency publishers at once.
	SyncPublish           float64 `json:"js_sync_publish_msgs_per_s"`
	SyncPublishConcurrent float64 `json:"js_sync_publish_concurrent_msgs_per_s"`
	// ExpectPublish appends as the engine does (stream.Append): each message carries the
	// last sequence of its chain's subjects, chains of 12 messages, one at a time and on
	// Concurrency chains at once.
	ExpectPublish           float64 `json:"js_expect_publish_msgs_per_s"`
	ExpectPublishConcurrent float64 `json:"js_expect_publish_concurrent_msgs_per_s"`
	Concurrency             int     `json:"concurrency"`
	// PGUpsert is the executions projection's statement (INSERT ... SELECT FROM unnest ...
	// ON CONFLICT DO UPDATE) in batches of UpsertBatch rows, into a copy of the table with its
	// indexes; PGCopy is COPY into a copy without indexes.
	PGUpsert    float64 `json:"pg_upsert_rows_per_s"`
	UpsertBatch int     `json:"pg_upsert_batch"`
	PGCopy      float64 `json:"pg_copy_rows_per_s"`
}

// Saturation is the workflow at saturation: Queued executions queued at once, topped up as
// they end until what is queued lasts the rest of the run at the recent rate (and 10 s more),
// then drained.
type Saturation struct {
	Workflow        string  `json:"workflow"`
	Steps           int     `json:"steps"`
	Queued          int     `json:"queued"`
	DurationSeconds float64 `json:"duration_seconds"`
	// Started and Completed count the executions of the whole run, drain included; Failed
	// those that failed (none, unless something is wrong).
	Started   int64 `json:"started"`
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
	// Overall is the whole sustained run, First and Last its first and last WindowSeconds.
	Overall       Window  `json:"overall"`
	First         Window  `json:"first"`
	Last          Window  `json:"last"`
	WindowSeconds float64 `json:"window_seconds"`
	// FeedStoppedSeconds is when the run stopped starting executions (0: at its end), and
	// QueuedAtEnd what was queued or running at its end.
	FeedStoppedSeconds float64 `json:"feed_stopped_seconds"`
	QueuedAtEnd        int64   `json:"queued_at_end"`
	// DrainSeconds is how long the executions still queued at the end took to end.
	DrainSeconds float64 `json:"drain_seconds"`
	// Minutes are the sustained run's whole minutes, when there are two or more: whether
	// throughput and memory hold over a long run. LastOverFirstMinute is the last minute's
	// executions/s over the first's, HeapLastOverFirstMinute its largest heap over the
	// first's.
	Minutes                 []Window `json:"minutes,omitempty"`
	LastOverFirstMinute     float64  `json:"last_over_first_minute,omitempty"`
	HeapLastOverFirstMinute float64  `json:"heap_last_over_first_minute,omitempty"`
}

// Window is the throughput over a span of the saturation run.
type Window struct {
	FromSeconds    float64 `json:"from_seconds"`
	ToSeconds      float64 `json:"to_seconds"`
	ExecutionsPerS float64 `json:"executions_per_s"`
	StepsPerS      float64 `json:"steps_per_s"`
	// StoredMsgsPerS is the messages appended to every memmie stream, and AsyncRatio that
	// over the async publish ceiling.
	StoredMsgsPerS float64 `json:"stored_msgs_per_s"`
	AsyncRatio     float64 `json:"async_ratio,omitempty"`
	// CPUSecondsPer1000 is this process's CPU over the executions that ended in the span:
	// unlike the rates, it hardly moves when other work shares the machine. MaxHeapBytes and
	// MaxRSSBytes are the largest heap and resident set sampled in the span.
	CPUSecondsPer1000 float64 `json:"cpu_seconds_per_1000_executions,omitempty"`
	MaxHeapBytes      uint64  `json:"max_heap_bytes"`
	MaxRSSBytes       uint64  `json:"max_rss_bytes"`
}

// MemorySample is the heap and the resident set at a time of the saturation run (seconds
// from its start), and the executions ended by then.
type MemorySample struct {
	AtSeconds float64 `json:"at_seconds"`
	HeapBytes uint64  `json:"heap_bytes"`
	RSSBytes  uint64  `json:"rss_bytes"`
	Ended     int64   `json:"ended"`
}

// Latency is how long one thing takes, alone and under a fixed offered load.
type Latency struct {
	// StartToCompleted is from the engine's Start of the saturation workflow to its completed
	// event received.
	StartToCompleted []Percentiles `json:"start_to_completed"`
	// BlobToLastDelta is from a blob's created event published to its last delta received:
	// the event's own and that of the transform-only workflow it triggers.
	BlobToLastDelta []Percentiles `json:"blob_to_last_delta"`
}

// Percentiles are one latency measurement: one at a time (OfferedPerS 0), or started at a fixed rate
// whatever the answers.
type Percentiles struct {
	OfferedPerS int     `json:"offered_per_s"`
	Samples     int     `json:"samples"`
	Lost        int     `json:"lost"`
	P50         float64 `json:"p50_ms"`
	P95         float64 `json:"p95_ms"`
	P99         float64 `json:"p99_ms"`
	Max         float64 `json:"max_ms"`
}

// Projections are the projections' figures.
type Projections struct {
	// MaxLagSeconds is the largest lag (memmie_projection_lag_seconds) of any projection,
	// sampled every second of the saturation run and its drain; LagSamples counts the samples.
	MaxLagSeconds float64 `json:"max_lag_seconds"`
	LagSamples    int     `json:"lag_samples"`
	// CatchUpSeconds is how long after the drain every projection had applied its stream.
	CatchUpSeconds float64 `json:"catch_up_seconds"`
	// RebuildEvents of MEMMIE_EXECUTIONS replayed by a rebuild of the executions projection at
	// RebuildEventsPerS; RebuildVsCopy is that over the COPY ceiling.
	RebuildEvents     int     `json:"rebuild_events,omitempty"`
	RebuildEventsPerS float64 `json:"rebuild_events_per_s,omitempty"`
	RebuildVsCopy     float64 `json:"rebuild_vs_copy,omitempty"`
}

// Resources are what this process used; the embedded NATS server runs in it and is counted,
// Postgres is not. PeakRSSBytes is the largest resident set of the whole run (getrusage),
// PeakHeapBytes the largest heap (live and unswept objects) sampled every second of the
// saturation run and its drain; CPU and allocations are those of the saturation run and its
// drain, over the executions it ended.
type Resources struct {
	PeakRSSBytes           uint64  `json:"peak_rss_bytes"`
	PeakHeapBytes          uint64  `json:"peak_heap_bytes"`
	CPUSecondsPer1000      float64 `json:"cpu_seconds_per_1000_executions"`
	AllocBytesPerExecution float64 `json:"alloc_bytes_per_execution"`
	// StoredBytesPerExecution is what the streams grew by, over the executions.
	StoredBytesPerExecution float64 `json:"stored_bytes_per_execution"`
	// PeakSampledRSSBytes is the largest resident set sampled during the saturation run and
	// its drain (PeakRSSBytes may come from another part), and Memory the heap and resident
	// set every 10 s of it.
	PeakSampledRSSBytes uint64         `json:"peak_sampled_rss_bytes"`
	Memory              []MemorySample `json:"memory,omitempty"`
}

// WriteTable writes the report as a table.
func (r *Report) WriteTable(w io.Writer) error {
	var t table
	m := r.Machine
	t.line(fmt.Sprintf("memmie bench, %s, %s/%s, %d CPUs, %s, nats-server %s, %s", r.Began.UTC().Format(time.DateTime+" UTC"),
		m.OS, m.Arch, m.CPUs, m.GoVersion, m.NATSServer, m.Postgres))
	s := r.Settings
	sync := "the server's default sync interval"
	if s.SyncAlways {
		sync = "sync_interval: always"
	}
	t.line(fmt.Sprintf("%d-step workflow, %d queued at once, sustained %s; loads %v/s; max running %d; %d partitions; %s",
		s.Steps, s.Executions, seconds(s.DurationSeconds), s.Loads, s.MaxRunning, s.Partitions, sync))
	if len(s.Skipped) > 0 {
		t.line("skipped: " + strings.Join(s.Skipped, ", "))
	}
	if c := r.Ceilings; c != nil {
		t.line(fmt.Sprintf("ceilings (%d-byte events; concurrent: %d publishers or chains)", c.PayloadBytes, c.Concurrency))
		t.row(fmt.Sprintf("JetStream async publish (%d in flight)", c.AsyncWindow), rate(c.AsyncPublish, "msgs/s"))
		t.row("JetStream sync publish (1 / concurrent)", rate(c.SyncPublish, "")+" / "+rate(c.SyncPublishConcurrent, "msgs/s"))
		t.row("expected last subject seq (1 / concurrent)", rate(c.ExpectPublish, "")+" / "+rate(c.ExpectPublishConcurrent, "msgs/s"))
		t.row(fmt.Sprintf("Postgres upsert (batches of %d)", c.UpsertBatch), rate(c.PGUpsert, "rows/s"))
		t.row("Postgres COPY", rate(c.PGCopy, "rows/s"))
	}
	if x := r.Saturation; x != nil {
		t.line(fmt.Sprintf("saturation (%s, %d queued at once, sustained %s)", x.Workflow, x.Queued, seconds(x.DurationSeconds)))
		for _, v := range []struct {
			name string
			w    Window
		}{{"overall", x.Overall}, {"first " + seconds(x.WindowSeconds), x.First}, {"last " + seconds(x.WindowSeconds), x.Last}} {
			ratio := ""
			if v.w.AsyncRatio > 0 {
				ratio = fmt.Sprintf(" (%.1f%% of async)", 100*v.w.AsyncRatio)
			}
			t.row(v.name, fmt.Sprintf("%s executions/s, %s steps/s, %s stored msgs/s%s",
				rate(v.w.ExecutionsPerS, ""), rate(v.w.StepsPerS, ""), rate(v.w.StoredMsgsPerS, ""), ratio))
		}
		if len(x.Minutes) > 0 {
			for i, m := range x.Minutes {
				t.row(fmt.Sprintf("minute %d", i+1), fmt.Sprintf("%s executions/s, %.2f CPU s per 1,000, heap max %s, RSS max %s",
					rate(m.ExecutionsPerS, ""), m.CPUSecondsPer1000, mib(m.MaxHeapBytes), mib(m.MaxRSSBytes)))
			}
			t.row("last minute over the first", fmt.Sprintf("%.2f of its executions/s, %.2f of its heap", x.LastOverFirstMinute,
				x.HeapLastOverFirstMinute))
		}
		stopped := "its end"
		if x.FeedStoppedSeconds > 0 {
			stopped = seconds(x.FeedStoppedSeconds)
		}
		t.row("executions", fmt.Sprintf("%d started (the last at %s), %d completed, %d failed; %d queued at the end, drained in %.1f s",
			x.Started, stopped, x.Completed, x.Failed, x.QueuedAtEnd, x.DrainSeconds))
	}
	if l := r.Latency; l != nil {
		t.line("latency (ms: p50 / p95 / p99 / max, samples)")
		for _, v := range []struct {
			name string
			runs []Percentiles
		}{{"start to completed", l.StartToCompleted}, {"blob event to last delta", l.BlobToLastDelta}} {
			for _, run := range v.runs {
				load := "one at a time"
				if run.OfferedPerS > 0 {
					load = fmt.Sprintf("at %d/s", run.OfferedPerS)
				}
				lost := ""
				if run.Lost > 0 {
					lost = fmt.Sprintf(", %d lost", run.Lost)
				}
				t.row(v.name+", "+load, fmt.Sprintf("%s / %s / %s / %s  (%d%s)", ms(run.P50), ms(run.P95), ms(run.P99), ms(run.Max), run.Samples, lost))
			}
		}
	}
	if p := r.Projections; p != nil {
		t.line("projections")
		t.row("max lag during saturation", fmt.Sprintf("%.2f s (%d samples); caught up %.1f s after the drain", p.MaxLagSeconds, p.LagSamples, p.CatchUpSeconds))
		if p.RebuildEvents > 0 {
			vs := ""
			if p.RebuildVsCopy > 0 {
				vs = fmt.Sprintf(" (%.2f of COPY's rows/s)", p.RebuildVsCopy)
			}
			t.row("rebuild of executions", fmt.Sprintf("%s events/s over %s events%s", rate(p.RebuildEventsPerS, ""),
				thousands(int64(p.RebuildEvents)), vs))
		}
	}
	if x := r.Resources; x != nil {
		t.line("resources (this process: engine, embedded NATS, load; not Postgres)")
		t.row("peak RSS / peak heap", fmt.Sprintf("%s / %s (RSS sampled during saturation: %s)", mib(x.PeakRSSBytes),
			mib(x.PeakHeapBytes), mib(x.PeakSampledRSSBytes)))
		t.row("CPU per 1,000 executions", fmt.Sprintf("%.2f s", x.CPUSecondsPer1000))
		t.row("allocated per execution", fmt.Sprintf("%.1f KB", x.AllocBytesPerExecution/1000))
		t.row("stored per execution", fmt.Sprintf("%.1f KB", x.StoredBytesPerExecution/1000))
	}
	t.line(fmt.Sprintf("took %.0f s", r.TookSeconds))
	return t.write(w)
}

// table is lines and rows of two columns, the names aligned over the whole table.
type table struct {
	lines [][2]string // a line has no value
	width int
}

func (t *table) line(s string) { t.lines = append(t.lines, [2]string{s, ""}) }

func (t *table) row(name, value string) {
	t.lines = append(t.lines, [2]string{"  " + name, value})
	t.width = max(t.width, len([]rune(name))+2)
}

func (t *table) write(w io.Writer) error {
	var b strings.Builder
	for _, l := range t.lines {
		if l[1] == "" {
			b.WriteString(l[0] + "\n")
			continue
		}
		fmt.Fprintf(&b, "%-*s  %s\n", t.width, l[0], l[1])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// seconds formats a number of seconds as a duration.
func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

// rate formats a rate with thousands separators.
func rate(v float64, unit string) string {
	s := thousands(int64(math.Round(v)))
	if unit != "" {
		s += " " + unit
	}
	return s
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var parts []string
	for len(s) > 3 {
		parts = append(parts, s[len(s)-3:])
		s = s[:len(s)-3]
	}
	parts = append(parts, s)
	slices.Reverse(parts)
	out := strings.Join(parts, ",")
	if neg {
		out = "-" + out
	}
	return out
}

func ms(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// percentiles summarises latencies by the nearest rank.
func percentiles(load int, took []time.Duration, lost int) Percentiles {
	r := Percentiles{OfferedPerS: load, Samples: len(took), Lost: lost}
	if len(took) == 0 {
		return r
	}
	slices.Sort(took)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(took)))) - 1
		return float64(took[max(0, i)]) / float64(time.Millisecond)
	}
	r.P50, r.P95, r.P99 = at(0.50), at(0.95), at(0.99)
	r.Max = float64(took[len(took)-1]) / float64(time.Millisecond)
	return r
}
