package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
)

// TestServeDeadLetters: a command that serve's orchestrator cannot read is dead-lettered, and
// memmie deadletter lists it (table and JSON), shows it with its data and redrives it, sending
// the API token; the copy, still unreadable, is dead-lettered again.
func TestServeDeadLetters(t *testing.T) {
	srv, nc, _ := natstest.Run(t)
	t.Setenv("MEMMIE_API_TOKEN", "s3cret")
	serve := startBackground(t, "serve", "--nats-url", srv.ClientURL(), "--http-addr", "127.0.0.1:0",
		"--database-url", pgtest.URL(t), "--log-level", "warn")
	apiURL := serve.ready(t)
	dl := func(args ...string) (int, string, string) {
		return executeSplit(t, append(append([]string{"deadletter"}, args...), "--api-url", apiURL)...)
	}

	const execution = "0d9c8b7a-6f5e-4d3c-9b2a-1f0e9d8c7b6a"
	require.NoError(t, nc.PublishMsg(&nats.Msg{Subject: events.InboxSubject(execution), Data: []byte("not an event"),
		Header: nats.Header{"Nats-Msg-Id": {"poison-1"}}}))

	type page struct {
		DeadLetters []struct {
			ID      string `json:"id"`
			Source  string `json:"source"`
			Subject string `json:"subject"`
		} `json:"dead_letters"`
		Next string `json:"next"`
	}
	listed := func(n int) page {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			code, out, errOut := dl("list", "--json")
			require.Equal(t, 0, code, errOut)
			var p page
			require.NoError(t, json.Unmarshal([]byte(out), &p), out)
			if len(p.DeadLetters) == n {
				return p
			}
			require.True(t, time.Now().Before(deadline), "not %d dead letters within 60s:\n%s\n%s", n, out, serve.out.String())
			time.Sleep(50 * time.Millisecond)
		}
	}
	p := listed(1)
	id := p.DeadLetters[0].ID
	assert.Equal(t, "orchestrator", p.DeadLetters[0].Source)
	assert.Equal(t, events.InboxSubject(execution), p.DeadLetters[0].Subject)

	code, out, errOut := dl("list")
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	assert.Regexp(t, `^ID\s+SOURCE\s+SUBJECT\s+RECORDED AT\s+REDRIVEN AT\s+REASON$`, lines[0])
	assert.Regexp(t, `^`+id+`\s+orchestrator\s+memmie\.inbox\.`+execution+`\s+\S+\s+-\s+decode event envelope`, lines[1])

	code, out, errOut = dl("show", id)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "source:      orchestrator\n")
	assert.Contains(t, out, "redrivable:  yes\n")
	assert.Contains(t, out, "Nats-Msg-Id: poison-1\n")
	assert.Contains(t, out, "data (12 bytes):\nnot an event\n")

	code, out, errOut = dl("redrive", id)
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `^redriven `+id+` to memmie\.inbox\.`+execution+` \(MEMMIE_INBOX seq \d+\)\n$`, out)
	code, out, errOut = dl("redrive", id)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "was redriven already")

	// The copy is as unreadable as the original: a second dead letter, newest first.
	p = listed(2)
	assert.NotEqual(t, id, p.DeadLetters[0].ID)
	assert.Equal(t, id, p.DeadLetters[1].ID)
	require.Eventually(t, func() bool {
		code, out, _ := dl("show", id)
		return code == 0 && strings.Contains(out, "redriven at: ")
	}, 60*time.Second, 50*time.Millisecond)

	code, _, errOut = dl("show", "nope")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not_found: ")
	code, _, errOut = dl("list", "--api-token", "wrong")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "unauthorized")
	require.NoError(t, serve.stop(t))
}
