package projections

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
)

func TestFoldDefinition(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	schema := func(v string) []byte {
		return fmt.Appendf(nil, `{"id":"s","version":%q,"type":"input","definition":{"type":"object"}}`, v)
	}
	seq := uint64(0)
	ev := func(d events.Data) Event {
		seq++
		var kind, id string
		switch d := d.(type) {
		case *events.DefinitionRegistered:
			kind, id = d.Kind, d.ID
		case *events.DefinitionDeactivated:
			kind, id = d.Kind, d.ID
		}
		subject, err := events.DefinitionSubject(kind, id)
		require.NoError(t, err)
		return Event{Event: events.Event{ID: fmt.Sprint("ev-", seq), Type: d.EventType(), Subject: subject,
			Time: at.Add(time.Duration(seq) * time.Second), Data: d}, Seq: seq}
	}
	reg := func(rev int, v string) Event {
		return ev(&events.DefinitionRegistered{Kind: "schema", ID: "s", Revision: rev, Definition: schema(v)})
	}
	deact := func(rev int) Event { return ev(&events.DefinitionDeactivated{Kind: "schema", ID: "s", Revision: rev}) }
	r1, r2, r3 := reg(1, "1"), reg(2, "2"), reg(3, "3")
	d1, d2 := deact(1), deact(2)
	unparsable := ev(&events.DefinitionRegistered{Kind: "schema", ID: "s", Revision: 4, Definition: []byte(`{"id":"s"}`)})
	wrongSubject := reg(5, "5")
	wrongSubject.Subject = "memmie.definitions.schemas.other"

	// state is "<revision>:<current>/<active>" per row, in revision order: c current, a active.
	state := func(rows definitionRows) []string {
		var out []string
		for rev, r := range rows {
			s := fmt.Sprintf("%d:", rev)
			if r.Current {
				s += "c"
			}
			if r.Active {
				s += "a"
			}
			out = append(out, s)
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		name    string
		history []Event
		want    []string
		// changed are the revisions the last event changed.
		changed []int
	}{
		{"registered", []Event{r1}, []string{"1:ca"}, []int{1}},
		{"a new revision is current, the old one neither current nor active", []Event{r1, r2}, []string{"1:", "2:ca"}, []int{2, 1}},
		{"deactivated", []Event{r1, r2, d2}, []string{"1:", "2:c"}, []int{2}},
		{"a deactivation of a revision no longer current", []Event{r1, r2, d1}, []string{"1:", "2:ca"}, nil},
		{"registered again after a deactivation", []Event{r1, d1, r2}, []string{"1:", "2:ca"}, []int{2, 1}},
		{"deactivated twice", []Event{r1, d1, d1}, []string{"1:c"}, nil},
		{"a revision registered twice", []Event{r1, r2, r2}, []string{"1:", "2:ca"}, nil},
		{"an older revision after a newer one", []Event{r2, r1}, []string{"1:", "2:ca"}, []int{1}},
		{"a deactivation of nothing", []Event{d1}, nil, nil},
		{"three revisions", []Event{r1, r2, r3}, []string{"1:", "2:", "3:ca"}, []int{3, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := definitionRows{}
			var changed []int
			for _, e := range tc.history {
				var err error
				changed, err = foldDefinition(rows, e)
				require.NoError(t, err)
			}
			require.Equal(t, tc.want, state(rows))
			require.Equal(t, tc.changed, changed)
			if len(tc.history) > 0 {
				// Replaying the whole history changes nothing.
				before := state(rows)
				for _, e := range tc.history {
					ch, err := foldDefinition(rows, e)
					require.NoError(t, err)
					require.Empty(t, ch, "%s applied twice", e.Type)
				}
				require.Equal(t, before, state(rows))
			}
		})
	}

	rows := definitionRows{}
	_, err := foldDefinition(rows, r1)
	require.NoError(t, err)
	require.JSONEq(t, string(schema("1")), string(rows[1].Canonical))
	require.Equal(t, r1.Time, rows[1].RegisteredAt)

	for _, bad := range []Event{unparsable, wrongSubject} {
		_, err := foldDefinition(rows, bad)
		require.Error(t, err)
		require.Equal(t, []string{"1:ca"}, state(rows), "left out: %v", err)
	}
}
