package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultLoadTimeout bounds Load when ctx has no deadline.
const DefaultLoadTimeout = time.Minute

// LastBySubject returns the last message of stream on subject, which may hold wildcards
// (memmie.executions.<id>.>). When there is none the error matches jetstream.ErrMsgNotFound.
//
// It asks with a direct get, answered by any replica without going through the stream
// leader (StreamConfig.AllowDirect); on a stream without direct gets it falls back to the
// leader's message API. A replica answers with what it has stored, which on a replicated
// stream may lag the leader by the last few messages. Use it where a stale answer is
// harmless: a hint that an expected-sequence append checks anyway (a cache's freshness, a
// lease's compare-and-swap), or a message that never changes once stored. Where the answer
// decides a write, use LeaderLastBySubject.
func LastBySubject(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	ctx, cancel := withDefaultTimeout(ctx, js)
	defer cancel()
	m, err := directGetLast(ctx, js, stream, subject)
	if errors.Is(err, nats.ErrNoResponders) {
		m, err = leaderGetLast(ctx, js, stream, subject)
	}
	if err != nil {
		return nil, fmt.Errorf("last message on %s in %s: %w", subject, stream, err)
	}
	return m, nil
}

// LeaderLastBySubject is LastBySubject answered by the stream leader (the JetStream API's
// STREAM.MSG.GET, never a direct get), so that it holds every message acknowledged before
// the call. It costs the leader a request of its API; use it where the answer decides a
// write: whether an append that conflicted had landed (Append, AppendChained), and where a
// history ends (Load).
func LeaderLastBySubject(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	ctx, cancel := withDefaultTimeout(ctx, js)
	defer cancel()
	m, err := leaderGetLast(ctx, js, stream, subject)
	if err != nil {
		return nil, fmt.Errorf("last message on %s in %s from the leader: %w", subject, stream, err)
	}
	return m, nil
}

// directGetLast sends the request in the body, not in the subject, because the subject may
// hold wildcards, which a subject we publish to must not.
func directGetLast(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(struct {
		LastBySubject string `json:"last_by_subj"`
	}{subject})
	if err != nil {
		return nil, err
	}
	resp, err := js.Conn().RequestWithContext(ctx, apiPrefix(js)+"DIRECT.GET."+stream, req)
	if err != nil {
		return nil, err
	}
	return decodeDirectGet(resp)
}

// decodeDirectGet reads a direct get answer: the stored message, with its coordinates in
// Nats-* headers, or an empty message with a Status header.
func decodeDirectGet(resp *nats.Msg) (*jetstream.RawStreamMsg, error) {
	if len(resp.Data) == 0 {
		if status := resp.Header.Get("Status"); status != "" {
			if status == "404" {
				return nil, jetstream.ErrMsgNotFound
			}
			return nil, fmt.Errorf("direct get: status %s: %s", status, resp.Header.Get("Description"))
		}
	}
	seq, err := strconv.ParseUint(resp.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("direct get: sequence header: %w", err)
	}
	ts, err := time.Parse(time.RFC3339Nano, resp.Header.Get(jetstream.TimeStampHeaer))
	if err != nil {
		return nil, fmt.Errorf("direct get: timestamp header: %w", err)
	}
	subject := resp.Header.Get(jetstream.SubjectHeader)
	if subject == "" {
		return nil, errors.New("direct get: no subject header")
	}
	return &jetstream.RawStreamMsg{
		Subject:  subject,
		Sequence: seq,
		Header:   resp.Header,
		Data:     resp.Data,
		Time:     ts,
	}, nil
}

// leaderGetLast asks the stream's message API, which only the stream leader answers. The
// request is raw: nats.go's Stream.GetLastMsgForSubject turns into a direct get on a stream
// that allows them.
func leaderGetLast(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(struct {
		LastBySubject string `json:"last_by_subj"`
	}{subject})
	if err != nil {
		return nil, err
	}
	resp, err := js.Conn().RequestWithContext(ctx, apiPrefix(js)+"STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, err
	}
	var r struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, fmt.Errorf("decode message get answer: %w", err)
	}
	switch {
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, jetstream.ErrMsgNotFound
	case r.Error != nil:
		return nil, r.Error
	case r.Message == nil:
		return nil, errors.New("message get answer without a message")
	}
	var hdr nats.Header
	if len(r.Message.Header) > 0 {
		if hdr, err = nats.DecodeHeadersMsg(r.Message.Header); err != nil {
			return nil, fmt.Errorf("decode message headers: %w", err)
		}
	}
	return &jetstream.RawStreamMsg{
		Subject:  r.Message.Subject,
		Sequence: r.Message.Sequence,
		Header:   hdr,
		Data:     r.Message.Data,
		Time:     r.Message.Time,
	}, nil
}

// apiPrefix is the JetStream API subject prefix of js, domain included.
func apiPrefix(js jetstream.JetStream) string {
	opts := js.Options()
	switch {
	case opts.Domain != "":
		return "$JS." + opts.Domain + ".API."
	case opts.APIPrefix != "":
		if opts.APIPrefix[len(opts.APIPrefix)-1] != '.' {
			return opts.APIPrefix + "."
		}
		return opts.APIPrefix
	}
	return jetstream.DefaultAPIPrefix
}

// Load returns the messages of stream on filterSubject, in stream order, up to the last one
// stored when Load starts: messages appended while it reads are left out, so it always ends.
// An entity with no messages yields no messages. The last message's Sequence is the
// LastSubjectSeq for the next Append.
//
// It asks the stream leader where the history ends (LeaderLastBySubject), because a
// writer decides on what it loads: a bound from a lagging replica would leave out the
// newest messages. It reads with an ordered consumer, deleted when done, which waits for
// those messages up to the bound. Without a deadline on ctx, DefaultLoadTimeout applies.
func Load(ctx context.Context, js jetstream.JetStream, stream, filterSubject string) ([]jetstream.RawStreamMsg, error) {
	return LoadAfter(ctx, js, stream, filterSubject, 0)
}

// LoadAfter is Load for the messages after stream sequence afterSeq only: what a writer
// whose cached state is at afterSeq has not seen yet, after a conflict.
func LoadAfter(ctx context.Context, js jetstream.JetStream, stream, filterSubject string, afterSeq uint64) ([]jetstream.RawStreamMsg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultLoadTimeout)
		defer cancel()
	}
	last, err := LeaderLastBySubject(ctx, js, stream, filterSubject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load %s from %s: %w", filterSubject, stream, err)
	}
	if last.Sequence <= afterSeq {
		return nil, nil
	}
	msgs, err := readRange(ctx, js, stream, filterSubject, afterSeq+1, last.Sequence)
	if err != nil {
		return nil, fmt.Errorf("load %s from %s: %w", filterSubject, stream, err)
	}
	return msgs, nil
}

func readRange(ctx context.Context, js jetstream.JetStream, stream, filterSubject string, firstSeq, lastSeq uint64) ([]jetstream.RawStreamMsg, error) {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filterSubject},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    firstSeq,
		// A consumer left behind (the delete below failed) goes away on its own.
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = js.DeleteConsumer(delCtx, stream, info.Name)
			cancel()
		}
	}()
	// A short pull expiry brings heartbeats every second: a consumer lost in a server restart
	// is noticed and recreated by the ordered consumer within seconds, instead of after the
	// default 30 s expiry.
	it, err := cons.Messages(jetstream.PullExpiry(2 * time.Second))
	if err != nil {
		return nil, err
	}
	defer it.Stop()

	var out []jetstream.RawStreamMsg
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, err
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, err
		}
		out = append(out, jetstream.RawStreamMsg{
			Subject:  msg.Subject(),
			Sequence: md.Sequence.Stream,
			Header:   msg.Headers(),
			Data:     msg.Data(),
			Time:     md.Timestamp,
		})
		// NumPending 0 ends the read even if lastSeq was deleted meanwhile.
		if md.Sequence.Stream >= lastSeq || md.NumPending == 0 {
			return out, nil
		}
	}
}
