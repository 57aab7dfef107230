package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/logbuf"
)

// The README's quickstart ("Try it"), line for line: TestQuickstart checks that the README
// holds each line and runs it. Change both together.
const (
	qsDev     = "memmie dev --nats-config nats.conf"
	qsExport  = "export MEMMIE_NATS_USER=client MEMMIE_NATS_PASSWORD=client-dev-password"
	qsTail    = "memmie deltas tail --from-start"
	qsBlob    = "7f1c2a52-2b8e-4f57-9a49-2e0c7f9d3b11"
	qsPublish = `memmie blobs publish ` + qsBlob + ` created --data '{"user_id": "0b7c7e58-7a8f-4d6c-9a0a-0a4c1d2e3f40", "content": "hello", "metadata": {"type": "note"}}'`
	qsList    = "memmie executions list --workflow blob_summary"
	qsShow    = "memmie executions show <execution_id>"
	qsV1      = "memmie blobs show " + qsBlob + " --version 1"
	qsLatest  = "memmie blobs show " + qsBlob
	// The same with the nats CLI, as the client user.
	qsNATSSub = `nats --user client --password client-dev-password sub 'memmie.deltas.>'`
	qsBlob2   = "2c9e4b7d-1f3a-4c5e-8d6b-7a9f0e1d2c3b"
	qsNATSPub = `nats --user client --password client-dev-password pub memmie.blobs.` + qsBlob2 + `.created \
  '{"blob_id": "` + qsBlob2 + `", "user_id": "0b7c7e58-7a8f-4d6c-9a0a-0a4c1d2e3f40", "content": "hi", "metadata": {"type": "note"}}' \
  -H Nats-Msg-Id:` + qsBlob2 + `-created`
)

// shellWords splits a command line as sh does, for the quoting the quickstart uses: words
// between spaces, single quotes kept literal, a backslash-newline a space.
func shellWords(line string) []string {
	line = strings.ReplaceAll(line, "\\\n", " ")
	var (
		words  []string
		cur    strings.Builder
		inWord bool
		quoted bool
	)
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestQuickstart runs the README's quickstart against a real memmie dev child process: the
// commands a new user types, the binary as they run it, with MEMMIE_NATS_URL and
// MEMMIE_API_URL naming the test's ports instead of the defaults. The nats CLI's lines are
// done with nats.go as the same client user: a plain publish with a Nats-Msg-Id and a plain
// subscription.
func TestQuickstart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, line := range []string{qsDev, qsExport, qsTail, qsPublish, qsList, qsShow, qsV1, qsLatest, qsNATSSub, qsNATSPub} {
		require.Contains(t, string(readme), line, "the README's quickstart has the line the test runs")
	}

	natsListen, httpAddr := freeAddr(t), freeAddr(t)
	devArgs := append(shellWords(qsDev)[2:], "--data-dir", devDataDir(t), "--definitions", "../../definitions",
		"--http-addr", httpAddr, "--nats-listen", natsListen)
	devArgs[1] = "../../nats.conf"
	dev := startDevProcess(t, nil, devArgs...)
	dev.ready(t)
	env := append(os.Environ(), "MEMMIE_NATS_URL=nats://"+natsListen, "MEMMIE_API_URL=http://"+httpAddr,
		"MEMMIE_NATS_USER=client", "MEMMIE_NATS_PASSWORD=client-dev-password")
	bin := buildMemmie(t)
	run := func(line string) string {
		t.Helper()
		args := shellWords(line)
		require.Equal(t, "memmie", args[0])
		ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args[1:]...)
		cmd.Env = env
		out, err := cmd.Output()
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		require.NoError(t, err, "%s\nstdout:\n%s\nstderr:\n%s", line, out, stderr)
		return string(out)
	}

	// Terminal 2: the deltas, from the first (whenever it starts), then as they come; and
	// nats sub 'memmie.deltas.>', from its start.
	tailOut := &logbuf.Buffer{}
	tail := exec.Command(bin, shellWords(qsTail)[1:]...)
	tail.Env, tail.Stdout, tail.Stderr = env, tailOut, tailOut
	require.NoError(t, tail.Start())
	tailDone := make(chan struct{})
	go func() { _ = tail.Wait(); close(tailDone) }()
	t.Cleanup(func() { _ = tail.Process.Kill(); <-tailDone })
	client, err := nats.Connect("nats://"+natsListen, nats.UserInfo("client", "client-dev-password"))
	require.NoError(t, err)
	t.Cleanup(client.Close)
	sub, err := client.SubscribeSync(shellWords(qsNATSSub)[6])
	require.NoError(t, err)
	require.NoError(t, client.Flush())

	// Terminal 3.
	out := run(qsPublish)
	assert.Regexp(t, `^published memmie.blobs.`+qsBlob+`.created \(MEMMIE_BLOBS seq 1, Nats-Msg-Id [0-9a-f-]{36}\)\n$`, out)
	pub := shellWords(qsNATSPub)
	msg := nats.NewMsg(pub[6])
	msg.Data = []byte(pub[7])
	msg.Header.Set("Nats-Msg-Id", strings.TrimPrefix(pub[9], "Nats-Msg-Id:"))
	require.Equal(t, "-H", pub[8])
	require.NoError(t, client.PublishMsg(msg))
	require.NoError(t, client.Flush())

	lines := regexp.MustCompile(`(?m)^\S+ ` + qsBlob + ` (v\d) (\S+)(?: (/\S+))?`)
	waitWithin(t, e2eWait, "deltas tail prints the blob's 3 deltas", func() (bool, string) {
		return len(lines.FindAllString(tailOut.String(), -1)) >= 3, tailOut.String()
	}, dev)
	var got []string
	for _, m := range lines.FindAllStringSubmatch(tailOut.String(), -1) {
		got = append(got, strings.TrimSpace(m[1]+" "+m[2]+" "+m[3]))
	}
	assert.Equal(t, []string{"v1 create", "v2 add /metadata/summary", "v3 add /metadata/summarized_by"}, got, tailOut.String())
	seen := map[string]int{}
	for len(seen) < 2 || seen[qsBlob] < 3 || seen[qsBlob2] < 3 {
		m, err := sub.NextMsg(e2eWait)
		require.NoError(t, err, "nats sub: %v", seen)
		ev, err := events.Decode(m.Data)
		require.NoError(t, err)
		seen[ev.Data.(*events.Delta).BlobID]++
	}
	assert.Equal(t, map[string]int{qsBlob: 3, qsBlob2: 3}, seen, "nats sub gets both blobs' deltas")

	// The execution.
	idLine := regexp.MustCompile(`(?m)^([0-9a-f-]{36})\s+blob_summary\s+completed`)
	var list string
	waitWithin(t, e2eWait, "executions list shows both completed executions", func() (bool, string) {
		list = run(qsList)
		return len(idLine.FindAllString(list, -1)) == 2, list
	}, dev)
	var executionID string
	for _, m := range idLine.FindAllStringSubmatch(list, -1) {
		// The tail follows every blob: the execution is the one on a line of this blob.
		if regexp.MustCompile(`(?m)^\S+ ` + qsBlob + ` v\d .*\(execution ` + m[1] + ` of blob_summary`).MatchString(tailOut.String()) {
			executionID = m[1]
		}
	}
	require.NotEmpty(t, executionID, "the execution of %s in\n%s\n%s", qsBlob, list, tailOut.String())
	var state struct {
		Status string `json:"status"`
		Output struct {
			DeltaOperations []map[string]any `json:"delta_operations"`
		} `json:"output"`
	}
	out = run(strings.Replace(qsShow, "<execution_id>", executionID, 1))
	require.NoError(t, json.Unmarshal([]byte(out), &state), out)
	assert.Equal(t, "completed", state.Status)
	require.Len(t, state.Output.DeltaOperations, 2, out)
	assert.Equal(t, "note blob "+qsBlob+" of user 0b7c7e58-7a8f-4d6c-9a0a-0a4c1d2e3f40", state.Output.DeltaOperations[0]["value"])

	// The blob at version 1 and at its latest.
	out = run(qsV1)
	assert.Contains(t, out, "version:      1\n")
	assert.Contains(t, out, "content:      \"hello\"\n")
	assert.NotContains(t, out, "summary")
	waitWithin(t, e2eWait, "blobs show at version 3", func() (bool, string) {
		out = run(qsLatest)
		return strings.Contains(out, "version:      3\n"), out
	}, dev)
	assert.Contains(t, out, `"summary": "note blob `+qsBlob+` of user 0b7c7e58-7a8f-4d6c-9a0a-0a4c1d2e3f40"`)
	assert.Contains(t, out, "last change:  ")
	assert.Contains(t, out, "(execution "+executionID+" of blob_summary revision 1)")
}
