package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Headers of an atomic batch publish (ADR-50). nats.go v1.55 has no API for it; the protocol
// is plain headers on core NATS messages.
const (
	HeaderBatchID     = "Nats-Batch-Id"
	HeaderBatchSeq    = "Nats-Batch-Sequence"
	HeaderBatchCommit = "Nats-Batch-Commit"
)

// JetStream API error codes that Append interprets.
const (
	// CodeWrongLastSequence: the expectation did not hold (JSStreamWrongLastSequenceErr).
	CodeWrongLastSequence jetstream.ErrorCode = 10071
	// CodeWrongLastSequenceConstant: the same, without the actual sequence; returned by
	// replicated streams, and when the filter subject has a write in flight
	// (JSStreamWrongLastSequenceConstantErr).
	CodeWrongLastSequenceConstant jetstream.ErrorCode = 10164
	// CodeAtomicPublishDisabled: the stream does not allow atomic batches.
	CodeAtomicPublishDisabled jetstream.ErrorCode = 10174
	// CodeAtomicPublishIncomplete: the server did not receive the whole batch (a staged
	// message was lost or rejected, or the batch timed out). Retryable.
	CodeAtomicPublishIncomplete jetstream.ErrorCode = 10176
	// CodeAtomicPublishDuplicate: a message of the batch has a Nats-Msg-Id already stored
	// within the stream's duplicate window (JSAtomicPublishContainsDuplicateMessageErr).
	CodeAtomicPublishDuplicate jetstream.ErrorCode = 10201
	// CodeAtomicPublishTooManyInflight: too many batches in flight on the stream. Retryable.
	CodeAtomicPublishTooManyInflight jetstream.ErrorCode = 10210
)

// ErrConflict is matched (errors.Is) by every error of an append whose expectation did not
// hold: another writer appended first. Reload the history and decide again.
var ErrConflict = errors.New("append conflict")

// ConflictError is the error of an append whose expectation did not hold. It matches
// ErrConflict and unwraps to the server's *jetstream.APIError.
type ConflictError struct {
	Stream        string
	FilterSubject string
	// Expected is the LastSubjectSeq the failed publish carried.
	Expected uint64
	// Stored counts the messages of the call stored before the conflict: always 0 for
	// Append, which is atomic; a prefix for AppendChained.
	Stored int
	// API is the server's answer (code 10071, 10164 or 10201).
	API *jetstream.APIError
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("append to %s: expected last sequence %d on %q: %s",
		e.Stream, e.Expected, e.FilterSubject, e.API.Description)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Unwrap returns the server's error.
func (e *ConflictError) Unwrap() error { return e.API }

// Msg is one message to append.
type Msg struct {
	Subject string
	Data    []byte
	// ID is sent as Nats-Msg-Id: the stream drops a second message with the same ID within
	// its duplicate window. Required, and unique per message.
	ID string
	// Header holds extra headers. Headers that steer the append (Nats-Msg-Id,
	// Nats-Expected-*, Nats-Batch-*) are rejected; use ID and Expect.
	Header nats.Header
}

// Expect is the optimistic-concurrency condition of an append.
type Expect struct {
	// FilterSubject is the subject, wildcards allowed, whose last message is checked, such as
	// memmie.executions.<id>.>. Empty means no condition.
	FilterSubject string
	// LastSubjectSeq is the stream sequence of the last message on FilterSubject that the
	// writer knows. 0 means the writer knows none: the append fails if one exists.
	LastSubjectSeq uint64
}

// Ack says where an append landed.
type Ack struct {
	Stream string
	// LastSeq is the stream sequence of the last message appended: the next LastSubjectSeq.
	LastSeq uint64
	// Duplicate is true when the messages were already stored by an earlier try of the same
	// append, whose ack was lost. LastSeq is then where that try landed.
	Duplicate bool
}

// Append stores msgs in stream, all or none, if expect holds.
//
// One message is a plain JetStream publish with Nats-Msg-Id, Nats-Expected-Stream and, with
// a filter, Nats-Expected-Last-Subject-Sequence and Nats-Expected-Last-Subject-Sequence-Subject.
// Several messages are one atomic batch: the stream must allow atomic publish
// (StreamConfig.AllowAtomicPublish, nats-server 2.12 or later). There is no fallback to
// separate publishes, as that would lose the all-or-nothing guarantee; a stream without it
// fails every batch with an error naming code 10174.
//
// When the expectation fails, Append looks at the last message on the subject of the last
// message of msgs: if its Nats-Msg-Id is that message's ID, this append had already landed
// (a retry after a lost ack; a standalone server checks the expectation before the
// duplicate window) and Append returns success with Ack.Duplicate. Otherwise it returns a
// *ConflictError. Any other error leaves the outcome unknown (a timeout may have landed):
// retry the same append with the same expectation.
//
// Without a deadline on ctx, the JetStream context's default timeout applies.
func Append(ctx context.Context, js jetstream.JetStream, stream string, msgs []Msg, expect Expect) (Ack, error) {
	if err := validate(stream, msgs, expect); err != nil {
		return Ack{}, fmt.Errorf("append to %s: %w", stream, err)
	}
	ctx, cancel := withDefaultTimeout(ctx, js)
	defer cancel()

	var (
		ack Ack
		err error
	)
	if len(msgs) == 1 {
		ack, err = publishOne(ctx, js, stream, msgs[0], expect)
	} else {
		ack, err = publishBatch(ctx, js, stream, msgs, expect)
	}
	if err == nil {
		return ack, nil
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return Ack{}, fmt.Errorf("append %d messages to %s: %w", len(msgs), stream, err)
	}
	switch apiErr.ErrorCode {
	case CodeWrongLastSequence, CodeWrongLastSequenceConstant, CodeAtomicPublishDuplicate:
		return resolveConflict(ctx, js, stream, msgs, expect, apiErr)
	case CodeAtomicPublishDisabled:
		return Ack{}, fmt.Errorf("append %d messages to %s: the stream needs AllowAtomicPublish: %w", len(msgs), stream, err)
	}
	return Ack{}, fmt.Errorf("append %d messages to %s: %w", len(msgs), stream, err)
}

func validate(stream string, msgs []Msg, expect Expect) error {
	if stream == "" {
		return errors.New("no stream name")
	}
	if len(msgs) == 0 {
		return errors.New("no messages")
	}
	if expect.FilterSubject == "" && expect.LastSubjectSeq != 0 {
		return fmt.Errorf("LastSubjectSeq %d without a FilterSubject", expect.LastSubjectSeq)
	}
	for i, m := range msgs {
		if m.Subject == "" {
			return fmt.Errorf("message %d has no subject", i+1)
		}
		if m.ID == "" {
			return fmt.Errorf("message %d (%s) has no ID", i+1, m.Subject)
		}
		for k := range m.Header {
			if reservedHeader(k) {
				return fmt.Errorf("message %d (%s) sets reserved header %s", i+1, m.Subject, k)
			}
		}
	}
	return nil
}

func reservedHeader(k string) bool {
	k = strings.ToLower(k)
	return k == "nats-msg-id" || strings.HasPrefix(k, "nats-expected-") || strings.HasPrefix(k, "nats-batch-")
}

func natsMsg(stream string, m Msg) *nats.Msg {
	nm := nats.NewMsg(m.Subject)
	for k, v := range m.Header {
		nm.Header[k] = slices.Clone(v)
	}
	nm.Header.Set(jetstream.MsgIDHeader, m.ID)
	nm.Header.Set(jetstream.ExpectedStreamHeader, stream)
	nm.Data = m.Data
	return nm
}

func publishOne(ctx context.Context, js jetstream.JetStream, stream string, m Msg, expect Expect) (Ack, error) {
	var opts []jetstream.PublishOpt
	if expect.FilterSubject != "" {
		opts = append(opts, jetstream.WithExpectLastSequenceForSubject(expect.LastSubjectSeq, expect.FilterSubject))
	}
	pa, err := js.PublishMsg(ctx, natsMsg(stream, m), opts...)
	if err != nil {
		return Ack{}, err
	}
	return Ack{Stream: pa.Stream, LastSeq: pa.Sequence, Duplicate: pa.Duplicate}, nil
}

// publishBatch sends all messages but the last without a reply subject, and the last with
// the commit header as a request: one round trip. The server stages the batch and runs every
// check (expectation, duplicates, limits) when the commit arrives; an error anywhere fails the
// commit. The expectation rides on the first message: the server checks it before any message
// of the batch is applied.
func publishBatch(ctx context.Context, js jetstream.JetStream, stream string, msgs []Msg, expect Expect) (Ack, error) {
	nc := js.Conn()
	batchID := nuid.Next()
	for i, m := range msgs {
		nm := natsMsg(stream, m)
		nm.Header.Set(HeaderBatchID, batchID)
		nm.Header.Set(HeaderBatchSeq, strconv.Itoa(i+1))
		if i == 0 && expect.FilterSubject != "" {
			nm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expect.LastSubjectSeq, 10))
			nm.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, expect.FilterSubject)
		}
		if i < len(msgs)-1 {
			if err := nc.PublishMsg(nm); err != nil {
				return Ack{}, fmt.Errorf("stage batch message %d: %w", i+1, err)
			}
			continue
		}
		nm.Header.Set(HeaderBatchCommit, "1")
		resp, err := nc.RequestMsgWithContext(ctx, nm)
		if err != nil {
			return Ack{}, fmt.Errorf("commit batch of %d: %w", len(msgs), err)
		}
		return parseBatchAck(resp.Data, batchID, len(msgs))
	}
	panic("unreachable")
}

// batchAck is the server's answer to a batch commit: a PubAck with the batch's ID and size,
// or an error.
type batchAck struct {
	Error   *jetstream.APIError `json:"error,omitempty"`
	Stream  string              `json:"stream"`
	Seq     uint64              `json:"seq"`
	BatchID string              `json:"batch"`
	Count   int                 `json:"count"`
}

func parseBatchAck(data []byte, batchID string, n int) (Ack, error) {
	var r batchAck
	if err := json.Unmarshal(data, &r); err != nil {
		return Ack{}, fmt.Errorf("decode batch ack %q: %w", data, err)
	}
	if r.Error != nil {
		return Ack{}, r.Error
	}
	if r.BatchID != batchID || r.Count != n {
		// A server that does not know atomic batches stores each message on its own and acks
		// the last one as a plain publish. EnsureStreams refuses such a server.
		return Ack{}, fmt.Errorf("the server did not commit an atomic batch (ack %q); it needs nats-server 2.12 or later", data)
	}
	return Ack{Stream: r.Stream, LastSeq: r.Seq}, nil
}

func resolveConflict(ctx context.Context, js jetstream.JetStream, stream string, msgs []Msg, expect Expect, apiErr *jetstream.APIError) (Ack, error) {
	last := msgs[len(msgs)-1]
	// From the leader: a lagging replica may not hold the try that landed yet.
	if m, err := LeaderLastBySubject(ctx, js, stream, last.Subject); err == nil && m.Header.Get(jetstream.MsgIDHeader) == last.ID {
		return Ack{Stream: stream, LastSeq: m.Sequence, Duplicate: true}, nil
	}
	return Ack{}, &ConflictError{
		Stream:        stream,
		FilterSubject: expect.FilterSubject,
		Expected:      expect.LastSubjectSeq,
		API:           apiErr,
	}
}

// defaultTimeout bounds a call whose ctx has no deadline when the JetStream context has no
// default timeout either.
const defaultTimeout = 5 * time.Second

// withDefaultTimeout bounds a ctx without deadline by the JetStream context's default timeout.
func withDefaultTimeout(ctx context.Context, js jetstream.JetStream) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	timeout := js.Options().DefaultTimeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	return context.WithTimeout(ctx, timeout)
}
