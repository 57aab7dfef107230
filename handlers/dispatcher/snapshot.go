package dispatcher

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/memmie/memmie/internal/jetstream/stream"
)

// SubjectSnapshots is the filter of the parts of the dispatcher's snapshot on the leases
// stream: memmie.leases.snapshots.dispatcher.<part>. The stream keeps one message per subject.
const SubjectSnapshots = "memmie.leases.snapshots.dispatcher.*"

const snapshotPrefix = "memmie.leases.snapshots.dispatcher."

// snapshotPartBytes bounds the data of one part: the leases stream takes messages of 4 KiB at
// most, headers included.
const snapshotPartBytes = 3 << 10

// snapshotAfterEvents makes the leader write a snapshot sooner than Config.SnapshotEvery when
// this many queue events were applied since the last one.
const snapshotAfterEvents = 5000

// snapshotPart is one message of a snapshot: the view as the fold of every queue event up to
// stream sequence Applied. A snapshot is the parts 0 to Parts-1 of one Gen; part 0 is written
// last, so that a reader who sees it sees the others.
type snapshotPart struct {
	Gen   string `json:"gen"`
	Part  int    `json:"part"`
	Parts int    `json:"parts"`
	// Created is the executions stream's creation time: a snapshot of a stream that was
	// deleted and created again is not used.
	Created time.Time   `json:"created"`
	Applied uint64      `json:"applied"`
	Execs   []snapEntry `json:"execs"`
}

// snapEntry is one execution of the view, as the stream's events leave it: an admitted one
// whose started event is not seen yet is queued (a new leader counts its start from the inbox).
type snapEntry struct {
	ID       string
	Priority int
	Seq      uint64
	Run      int
	Status   status
}

// MarshalJSON writes [id, priority, seq, run, status]: a part holds some 50 entries.
func (e snapEntry) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{e.ID, e.Priority, e.Seq, e.Run, int(e.Status)})
}

func (e *snapEntry) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if len(raw) != 5 {
		return fmt.Errorf("snapshot entry: %d fields, want 5", len(raw))
	}
	var st int
	for i, v := range []any{&e.ID, &e.Priority, &e.Seq, &e.Run, &st} {
		if err := json.Unmarshal(raw[i], v); err != nil {
			return fmt.Errorf("snapshot entry field %d: %w", i, err)
		}
	}
	if st < int(statusQueued) || st > int(statusWaiting) || st == int(statusStarting) {
		return fmt.Errorf("snapshot entry: status %d", st)
	}
	e.Status = status(st)
	return nil
}

// StartUp says what a Start read.
type StartUp struct {
	// SnapshotParts is the number of snapshot messages read; 0 when there was no usable
	// snapshot and the view was folded from the first queue event.
	SnapshotParts int `json:"snapshot_parts"`
	// Events is the number of queue events applied until the view caught up.
	Events int `json:"events"`
	// Took is how long it took.
	Took time.Duration `json:"took"`
}

// loadSnapshot reads the last snapshot and loads it into the view, returning the number of
// messages read and the stream sequence to follow from. A missing or unusable snapshot is not
// an error: the view is folded from the first event (from sequence 1).
func (d *Dispatcher) loadSnapshot(ctx context.Context, created time.Time, lastSeq uint64) (int, uint64, error) {
	msgs, err := stream.Load(ctx, d.js, d.cfg.Snapshots, SubjectSnapshots)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, 1, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("dispatcher: read the snapshot: %w", err)
	}
	if len(msgs) == 0 {
		return 0, 1, nil
	}
	parts := map[int]snapshotPart{}
	for _, m := range msgs {
		var p snapshotPart
		if err := json.Unmarshal(m.Data, &p); err != nil {
			d.log.Warn("unreadable snapshot part; replaying from the first event", "subject", m.Subject, "err", err)
			return len(msgs), 1, nil
		}
		parts[p.Part] = p
	}
	first, ok := parts[0]
	switch {
	case !ok:
		d.log.Warn("snapshot without its first part; replaying from the first event")
		return len(msgs), 1, nil
	case !first.Created.Equal(created) || first.Applied > lastSeq:
		d.log.Info("snapshot of another executions stream; replaying from the first event")
		return len(msgs), 1, nil
	}
	var entries []snapEntry
	for i := range first.Parts {
		p, ok := parts[i]
		if !ok || p.Gen != first.Gen {
			// Being written, or written by two processes at once: rare, and only slower.
			d.log.Info("snapshot incomplete; replaying from the first event", "part", i)
			return len(msgs), 1, nil
		}
		entries = append(entries, p.Execs...)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range entries {
		e := &exec{id: s.ID, priority: s.Priority, seq: s.Seq, run: s.Run, index: -1, status: statusWaiting}
		d.execs[e.id] = e
		if s.Status == statusQueued {
			e.status = statusQueued
			heap.Push(&d.queue, e)
		} else {
			d.setStatus(e, s.Status)
		}
	}
	d.applied = first.Applied
	d.snapApplied, d.snapParts, d.snapAt = first.Applied, first.Parts, d.cfg.Now()
	return len(msgs), first.Applied + 1, nil
}

// snapshotDue reports whether the leader should write a snapshot now.
func (d *Dispatcher) snapshotDue() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.caughtUp || d.applied == d.snapApplied {
		return false
	}
	return d.applied-d.snapApplied >= snapshotAfterEvents || d.cfg.Now().Sub(d.snapAt) >= d.cfg.SnapshotEvery
}

// writeSnapshot writes the view as a snapshot, from which the next dispatcher to start
// replays only the events after it.
func (d *Dispatcher) writeSnapshot(ctx context.Context) error {
	d.mu.Lock()
	if !d.caughtUp || d.applied == d.snapApplied {
		d.mu.Unlock()
		return nil
	}
	entries := make([]snapEntry, 0, len(d.execs))
	for _, e := range d.execs {
		if e.resolving {
			d.mu.Unlock()
			return nil // its priority is not known yet: the next one
		}
		st := e.status
		if st == statusStarting {
			st = statusQueued
		}
		entries = append(entries, snapEntry{ID: e.id, Priority: e.priority, Seq: e.seq, Run: e.run, Status: st})
	}
	applied, oldParts := d.applied, d.snapParts
	d.mu.Unlock()

	gen := nuid.Next()
	var parts []snapshotPart
	size := 0
	for _, e := range entries {
		b, _ := e.MarshalJSON()
		if len(parts) == 0 || size+len(b)+1 > snapshotPartBytes {
			parts = append(parts, snapshotPart{Gen: gen, Part: len(parts), Created: d.created, Applied: applied})
			size = 200 // the part's other fields
		}
		p := &parts[len(parts)-1]
		p.Execs = append(p.Execs, e)
		size += len(b) + 1
	}
	if len(parts) == 0 {
		parts = []snapshotPart{{Gen: gen, Created: d.created, Applied: applied}}
	}
	for i := len(parts) - 1; i >= 0; i-- {
		parts[i].Parts = len(parts)
		data, err := json.Marshal(parts[i])
		if err != nil {
			return fmt.Errorf("dispatcher: encode the snapshot: %w", err)
		}
		subject := snapshotPrefix + strconv.Itoa(i)
		if _, err := stream.Append(ctx, d.js, d.cfg.Snapshots, []stream.Msg{{Subject: subject, Data: data, ID: gen + "-" + strconv.Itoa(i)}}, stream.Expect{}); err != nil {
			return fmt.Errorf("dispatcher: write the snapshot: %w", err)
		}
	}
	if oldParts > len(parts) {
		// Parts of a larger snapshot are ignored (another gen); drop them all the same.
		if s, err := d.js.Stream(ctx, d.cfg.Snapshots); err == nil {
			for i := len(parts); i < oldParts; i++ {
				_ = s.Purge(ctx, jetstream.WithPurgeSubject(snapshotPrefix+strconv.Itoa(i)))
			}
		}
	}
	d.mu.Lock()
	d.snapApplied, d.snapParts, d.snapAt = applied, len(parts), d.cfg.Now()
	d.mu.Unlock()
	d.log.Debug("snapshot written", "applied", applied, "executions", len(entries), "parts", len(parts))
	return nil
}
