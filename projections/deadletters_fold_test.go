package projections

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
)

func TestFoldDeadLetter(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := func(id string, d events.Data, k int) Event {
		return Event{Event: events.Event{ID: id, Type: d.EventType(), Time: at.Add(time.Duration(k) * time.Second), Data: d}, Seq: uint64(k)}
	}
	recorded := ev("dl-1", &events.DeadLetter{Source: "orchestrator", Stream: "MEMMIE_INBOX", Sequence: 7,
		Subject: "memmie.inbox.e1", Headers: map[string][]string{"X-A": {"1", "b\x00c"}}, Data: []byte("x\x00y"),
		Reason: "decode: bad \x00 byte"}, 1)
	again := ev("dl-1", &events.DeadLetter{Source: "orchestrator", Subject: "memmie.inbox.e1", Data: []byte("other"),
		Reason: "recorded again past the duplicate window"}, 2)
	redriven := ev("r-1", &events.DeadLetterRedriven{DeadLetterID: "dl-1", Source: "orchestrator",
		Subject: "memmie.inbox.e1", Stream: "MEMMIE_INBOX", Sequence: 9, MsgID: "m"}, 3)
	later := redriven
	later.Time, later.Seq = at.Add(time.Hour+time.Nanosecond), 4
	other := ev("r-2", &events.DeadLetterRedriven{DeadLetterID: "dl-unknown", Source: "orchestrator",
		Subject: "memmie.inbox.e1", Stream: "MEMMIE_INBOX", Sequence: 9, MsgID: "m"}, 5)
	unrelated := ev("def", &events.DefinitionDeactivated{Kind: "workflow", ID: "w", Revision: 1}, 6)

	base := deadLetterRow{ID: "dl-1", Source: "orchestrator", Reason: "decode: bad \uFFFD byte", Subject: "memmie.inbox.e1",
		Headers: map[string][]string{"X-A": {"1", "b\uFFFDc"}}, Data: []byte("x\x00y"), Stream: "MEMMIE_INBOX",
		StreamSeq: 7, RecordedAt: recorded.Time}
	with := func(f func(*deadLetterRow)) *deadLetterRow {
		r := base
		f(&r)
		return &r
	}
	for _, tc := range []struct {
		name   string
		events []Event
		want   *deadLetterRow
	}{
		{"recorded, NULs out of its texts, its data kept", []Event{recorded}, &base},
		{"recorded again keeps the first", []Event{recorded, again}, &base},
		{"redriven", []Event{recorded, redriven}, with(func(r *deadLetterRow) { r.RedrivenAt = redriven.Time })},
		{"redriven again later moves it, to microseconds", []Event{recorded, redriven, later}, with(func(r *deadLetterRow) {
			r.RedrivenAt = at.Add(time.Hour)
		})},
		{"an older redrive does not move it back", []Event{recorded, later, redriven}, with(func(r *deadLetterRow) {
			r.RedrivenAt = at.Add(time.Hour)
		})},
		{"a redrive makes no row", []Event{redriven}, nil},
		{"another dead letter's redrive and other events leave it", []Event{recorded, other, unrelated}, &base},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var row *deadLetterRow
			for _, e := range tc.events {
				id, ok := deadLetterOf(e)
				if !ok || (row != nil && id != row.ID) || (row == nil && id != "dl-1") {
					continue
				}
				row, _ = foldDeadLetter(row, e)
			}
			require.Equal(t, tc.want, row)
			// Idempotent: every event folded a second time changes nothing.
			for _, e := range tc.events {
				if id, _ := deadLetterOf(e); row == nil || id != row.ID {
					continue
				}
				got, changed := foldDeadLetter(row, e)
				require.False(t, changed, "event %s changed the row a second time", e.ID)
				require.Same(t, row, got)
			}
		})
	}
}
