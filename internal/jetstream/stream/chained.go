package stream

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// AppendChained stores msgs one publish at a time, each expecting the message before it as
// the last on expect.FilterSubject, so that no other writer's message can come between them.
// Every message must be under FilterSubject, which is required.
//
// Unlike Append it is not atomic: a failure after the first message leaves a prefix of msgs
// stored. It is resumable instead: calling it again with the same msgs and expectation skips
// what an earlier call stored (recognised by the ID of the last message on the filter) and
// stores the rest, reporting Ack.Duplicate. A conflict after a stored prefix is a
// *ConflictError whose Stored counts that prefix.
//
// Use it where Append's atomic batch is too slow: on a replica-1 file stream the server stages
// each batch in a file store of its own and syncs it to disk, holding the stream's lock (see
// the package benchmarks). A chained append of n messages costs n round trips and no sync.
func AppendChained(ctx context.Context, js jetstream.JetStream, stream string, msgs []Msg, expect Expect) (Ack, error) {
	if err := validate(stream, msgs, expect); err != nil {
		return Ack{}, fmt.Errorf("append to %s: %w", stream, err)
	}
	if expect.FilterSubject == "" {
		return Ack{}, fmt.Errorf("append to %s: a chained append needs a FilterSubject", stream)
	}
	ctx, cancel := withDefaultTimeout(ctx, js)
	defer cancel()

	ack := Ack{Stream: stream, LastSeq: expect.LastSubjectSeq}
	for i := 0; i < len(msgs); i++ {
		pa, err := publishOne(ctx, js, stream, msgs[i], Expect{FilterSubject: expect.FilterSubject, LastSubjectSeq: ack.LastSeq})
		if err == nil {
			ack.LastSeq = pa.LastSeq
			ack.Duplicate = ack.Duplicate || pa.Duplicate
			continue
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || (apiErr.ErrorCode != CodeWrongLastSequence && apiErr.ErrorCode != CodeWrongLastSequenceConstant) {
			return Ack{}, fmt.Errorf("append message %d of %d to %s: %w", i+1, len(msgs), stream, err)
		}
		// Did an earlier call store msgs[i:j+1] already? Then the last message on the filter
		// is one of them. The leader answers: a lagging replica may not hold them yet.
		if last, lerr := LeaderLastBySubject(ctx, js, stream, expect.FilterSubject); lerr == nil {
			if j := indexByID(msgs[i:], last.Header.Get(jetstream.MsgIDHeader)); j >= 0 {
				ack.LastSeq = last.Sequence
				ack.Duplicate = true
				i += j
				continue
			}
		}
		return Ack{}, &ConflictError{
			Stream:        stream,
			FilterSubject: expect.FilterSubject,
			Expected:      ack.LastSeq,
			Stored:        i,
			API:           apiErr,
		}
	}
	return ack, nil
}

func indexByID(msgs []Msg, id string) int {
	for j, m := range msgs {
		if m.ID == id {
			return j
		}
	}
	return -1
}
