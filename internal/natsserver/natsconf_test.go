package natsserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/runner"
	"github.com/memmie/memmie/handlers/timers"
	"github.com/memmie/memmie/handlers/triggers"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/services"
)

// permissionErrors collects the asynchronous permission violations the server reports to a
// connection, in the order the server sent them.
type permissionErrors struct {
	mu   sync.Mutex
	errs []string
}

func (p *permissionErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
		p.mu.Lock()
		p.errs = append(p.errs, err.Error())
		p.mu.Unlock()
	}
}

// has reports whether a violation names subject exactly (the server quotes it).
func (p *permissionErrors) has(subject string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.errs {
		if strings.Contains(e, `"`+subject+`"`) {
			return true
		}
	}
	return false
}

func (p *permissionErrors) waitFor(t *testing.T, subject string) {
	t.Helper()
	require.Eventually(t, func() bool { return p.has(subject) }, 20*time.Second, 10*time.Millisecond,
		"no permission violation for %s", subject)
}

// testContext bounds one test or subtest, so that a call refused by the server fails that
// subtest alone.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// confServer is a server loaded from the repository's nats.conf by the server's own parser,
// with an engine and a client connection.
type confServer struct {
	srv    *natsserver.Server
	engine *nats.Conn
	ejs    jetstream.JetStream
	client *nats.Conn
	cjs    jetstream.JetStream
	perms  *permissionErrors
	probes int
}

func startConf(t *testing.T, engineOpts ...nats.Option) *confServer {
	t.Helper()
	srv, err := natsserver.Start(natsserver.Config{ConfigFile: "../../nats.conf", Port: -1, StoreDir: t.TempDir()})
	require.NoError(t, err, "start a server from nats.conf")
	t.Cleanup(srv.Shutdown)
	// The engine connects with its own reply prefix, as memmie does.
	engineConn, err := nats.Connect(srv.ClientURL(), append([]nats.Option{nats.UserInfo("engine", "engine-dev-password"),
		nats.CustomInboxPrefix(events.EngineInboxPrefix)}, engineOpts...)...)
	require.NoError(t, err)
	t.Cleanup(engineConn.Close)
	ejs, err := jetstream.New(engineConn)
	require.NoError(t, err)
	perms := &permissionErrors{}
	client, err := nats.Connect(srv.ClientURL(), nats.UserInfo("client", "client-dev-password"), nats.ErrorHandler(perms.handler))
	require.NoError(t, err)
	t.Cleanup(client.Close)
	cjs, err := jetstream.New(client)
	require.NoError(t, err)
	return &confServer{srv: srv, engine: engineConn, ejs: ejs, client: client, cjs: cjs, perms: perms}
}

// denied sends a request to subject as the client and waits for the server's permission
// violation naming it.
func (c *confServer) denied(t *testing.T, subject string, body string) {
	t.Helper()
	require.NoError(t, c.client.PublishRequest(subject, c.client.NewRespInbox(), []byte(body)))
	require.NoError(t, c.client.Flush())
	c.perms.waitFor(t, subject)
}

// deniedSub subscribes to subject as the client and waits for the server's violation.
func (c *confServer) deniedSub(t *testing.T, subject string) {
	t.Helper()
	sub, err := c.client.SubscribeSync(subject)
	require.NoError(t, err)
	require.NoError(t, c.client.Flush())
	c.perms.waitFor(t, subject)
	_ = sub.Unsubscribe()
}

// allowedPub publishes to subject as the client, then to a subject the client may not
// publish to: the server answers a connection's messages in order, so once the second one's
// violation is in, the first one had none.
func (c *confServer) allowedPub(t *testing.T, subject string) {
	t.Helper()
	c.probes++
	probe := fmt.Sprintf("memmie.probe.%d", c.probes)
	require.NoError(t, c.client.Publish(subject, nil))
	require.NoError(t, c.client.Publish(probe, nil))
	require.NoError(t, c.client.Flush())
	c.perms.waitFor(t, probe)
	require.False(t, c.perms.has(subject), "the client may publish to %s", subject)
}

// deniedCall runs a JetStream call that the server must refuse: it fails, and the server
// reports a violation for subject, the request it was sent on.
func (c *confServer) deniedCall(t *testing.T, subject string, call func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	require.Error(t, call(ctx), "a call on %s must fail", subject)
	c.perms.waitFor(t, subject)
}

// engineDurables are the durable consumers memmie creates on streams the client may read,
// each with a config like the handler's. nats.conf denies them by name.
var engineDurables = []jetstream.ConsumerConfig{
	{Durable: runner.Name, FilterSubjects: []string{"memmie.executions.*.step.scheduled"}, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: 5},
	{Durable: timers.Name, FilterSubjects: timers.Filters, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1},
}

// TestNATSConfPermissions loads the top-level nats.conf and proves the client user's rights,
// one assertion per rule: it publishes blob events and reads deltas and executions through
// consumers of its own, and it can neither write memmie's streams, nor touch memmie's
// durable consumers, nor read the internal streams.
func TestNATSConfPermissions(t *testing.T) {
	c := startConf(t)
	ctx := testContext(t)
	require.NoError(t, stream.EnsureStreams(ctx, c.ejs, engine.StreamConfigs(streams.Options{})), "the engine user manages the streams")
	// Written as memmie writes them, with stream.Append: each message carries
	// Nats-Expected-Stream, which is what keeps a copy of it out of every other stream (see
	// "cannot store anything through a push consumer's deliver subject").
	_, err := stream.Append(ctx, c.ejs, streams.Deltas, []stream.Msg{{Subject: "memmie.deltas.b1", Data: []byte(`{"version":1}`), ID: "d1"}},
		stream.Expect{FilterSubject: "memmie.deltas.b1"})
	require.NoError(t, err, "the engine user writes deltas")
	_, err = stream.Append(ctx, c.ejs, streams.Executions, []stream.Msg{{Subject: "memmie.executions.e1.step.scheduled", Data: []byte(`{}`), ID: "x1"}},
		stream.Expect{FilterSubject: "memmie.executions.e1.>"})
	require.NoError(t, err, "the engine user writes executions")
	// A decision of several events is one atomic batch.
	_, err = stream.Append(ctx, c.ejs, streams.Executions, []stream.Msg{
		{Subject: "memmie.executions.e2.queued", Data: []byte(`{}`), ID: "x2"},
		{Subject: "memmie.executions.e2.started", Data: []byte(`{}`), ID: "x3"},
	}, stream.Expect{FilterSubject: "memmie.executions.e2.>"})
	require.NoError(t, err, "the engine user writes executions in batches")
	for _, cfg := range engineDurables {
		_, err := c.ejs.CreateOrUpdateConsumer(ctx, streams.Executions, cfg)
		require.NoError(t, err, "the engine user creates %s", cfg.Durable)
	}
	readable := []struct{ stream, subject string }{
		{streams.Deltas, "memmie.deltas.b1"},
		{streams.Executions, "memmie.executions.e1.step.scheduled"},
	}

	t.Run("publishes blob events", func(t *testing.T) {
		ctx := testContext(t)
		for _, kind := range []string{"created", "updated", "deleted"} {
			ack, err := c.cjs.Publish(ctx, "memmie.blobs.b1."+kind, []byte(`{"blob_id":"b1"}`), jetstream.WithMsgID("b1-"+kind))
			require.NoError(t, err, "the client publishes %s blob events", kind)
			require.Equal(t, streams.Blobs, ack.Stream)
		}
	})

	t.Run("reads account and stream info", func(t *testing.T) {
		ctx := testContext(t)
		_, err := c.cjs.AccountInfo(ctx)
		require.NoError(t, err, "$JS.API.INFO")
		name, err := c.cjs.StreamNameBySubject(ctx, "memmie.deltas.b1")
		require.NoError(t, err, "$JS.API.STREAM.NAMES")
		require.Equal(t, streams.Deltas, name)
		for _, r := range readable {
			s, err := c.cjs.Stream(ctx, r.stream)
			require.NoError(t, err, "$JS.API.STREAM.INFO.%s", r.stream)
			require.True(t, s.CachedInfo().Config.AllowDirect)
		}
	})

	t.Run("replays with ordered consumers", func(t *testing.T) {
		ctx := testContext(t)
		for _, r := range readable {
			cons, err := c.cjs.OrderedConsumer(ctx, r.stream, jetstream.OrderedConsumerConfig{})
			require.NoError(t, err, "the client reads %s", r.stream)
			msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
			require.NoError(t, err, "the client replays %s", r.stream)
			require.Equal(t, r.subject, msg.Subject())
		}
	})

	t.Run("replays with the legacy push ordered subscribe (nats sub --all)", func(t *testing.T) {
		js, err := c.client.JetStream()
		require.NoError(t, err)
		for _, r := range readable {
			// The stream is looked up by subject, as nats sub does.
			sub, err := js.SubscribeSync(r.subject, nats.OrderedConsumer(), nats.DeliverAll())
			require.NoError(t, err, "the client subscribes to %s from the first message", r.stream)
			msg, err := sub.NextMsg(10 * time.Second)
			require.NoError(t, err, "the client replays %s", r.stream)
			require.Equal(t, r.subject, msg.Subject)
			require.NoError(t, sub.Unsubscribe())
		}
		// Flow control replies of push consumers.
		for _, r := range readable {
			c.allowedPub(t, "$JS.FC."+r.stream+".consumer.1")
		}
	})

	t.Run("fetches and acks on an ephemeral pull consumer", func(t *testing.T) {
		ctx := testContext(t)
		for _, r := range readable {
			cons, err := c.cjs.CreateConsumer(ctx, r.stream, jetstream.ConsumerConfig{
				AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: time.Minute,
			})
			require.NoError(t, err, "the client creates a consumer on %s", r.stream)
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
			require.NoError(t, err)
			var got []jetstream.Msg
			for msg := range batch.Messages() {
				got = append(got, msg)
			}
			require.NoError(t, batch.Error(), "the client pulls from its consumer on %s", r.stream)
			require.Len(t, got, 1)
			require.NoError(t, got[0].DoubleAck(ctx), "the client acks on %s", r.stream)
			info, err := cons.Info(ctx)
			require.NoError(t, err, "the client reads its consumer's info on %s", r.stream)
			require.Equal(t, uint64(1), info.AckFloor.Stream)
			require.NoError(t, c.cjs.DeleteConsumer(ctx, r.stream, info.Name), "the client deletes its consumer on %s", r.stream)
		}
	})

	t.Run("direct-gets messages", func(t *testing.T) {
		ctx := testContext(t)
		for _, r := range readable {
			s, err := c.cjs.Stream(ctx, r.stream)
			require.NoError(t, err)
			last, err := s.GetLastMsgForSubject(ctx, r.subject)
			require.NoError(t, err, "$JS.API.DIRECT.GET.%s.<subject>", r.stream)
			require.Equal(t, uint64(1), last.Sequence)
			first, err := s.GetMsg(ctx, 1)
			require.NoError(t, err, "$JS.API.DIRECT.GET.%s", r.stream)
			require.Equal(t, r.subject, first.Subject)
		}
	})

	t.Run("subscribes to live deltas", func(t *testing.T) {
		ctx := testContext(t)
		sub, err := c.client.SubscribeSync("memmie.deltas.>")
		require.NoError(t, err)
		defer sub.Unsubscribe()
		require.NoError(t, c.client.Flush())
		_, err = stream.Append(ctx, c.ejs, streams.Deltas, []stream.Msg{{Subject: "memmie.deltas.b2", Data: []byte(`{"version":1}`), ID: "d2"}}, stream.Expect{})
		require.NoError(t, err)
		msg, err := sub.NextMsg(10 * time.Second)
		require.NoError(t, err, "the client follows memmie.deltas.>")
		require.Equal(t, "memmie.deltas.b2", msg.Subject)
	})

	t.Run("cannot store anything through a push consumer's deliver subject", func(t *testing.T) {
		ctx := testContext(t)
		// A push consumer's deliver subject is in the request body, where no permission rule
		// sees it: the server refuses only a subject of the consumer's own stream (a cycle).
		// It delivers once a subscription on exactly that subject exists, and then the
		// stream storing the subject is handed the copy too. Only the copy's
		// Nats-Expected-Stream, naming the stream it came from, makes that stream refuse it.
		targets := []string{
			"memmie.deltas.b9", "memmie.executions.e9.completed", "memmie.blobs.b9.created", "memmie.inbox.e9",
			"memmie.timers.e9.t9", "memmie.definitions.workflows.w9", "memmie.deadletter.runner", "memmie.leases.members.p9",
			"memmie.triggers.b9",
		}
		before := map[string]uint64{}
		for _, target := range targets {
			name, err := c.ejs.StreamNameBySubject(ctx, target)
			require.NoError(t, err, "a stream stores %s", target)
			before[name] = streamMsgs(ctx, t, c.ejs, name)
		}
		require.Len(t, before, len(engine.StreamConfigs(streams.Options{})), "every stream is a target: %v", before)

		var created []struct{ stream, name string }
		n := 0
		nextName := func() string { n++; return fmt.Sprintf("copy%d", n) }
		for _, target := range targets {
			// The attacker's subscriber on the target, which activates a push consumer: the
			// client may subscribe to one blob's deltas, and to nothing else a stream stores.
			var live, all *nats.Subscription
			if strings.HasPrefix(target, "memmie.deltas.") {
				var err error
				live, err = c.client.SubscribeSync(target)
				require.NoError(t, err)
				// A follower of every delta, which alone would not make it deliver.
				all, err = c.client.SubscribeSync("memmie.deltas.>")
				require.NoError(t, err)
				require.NoError(t, c.client.Flush())
			} else {
				c.deniedSub(t, target)
			}
			for _, r := range readable {
				filter := map[string]string{streams.Deltas: "memmie.deltas.>", streams.Executions: "memmie.executions.>"}[r.stream]
				// Both forms the client may use: the name in the subject, with and without the filter.
				for _, suffix := range []string{"", "." + filter} {
					name := nextName()
					body := fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"deliver_subject":%q,"ack_policy":"none","filter_subject":%q}}`,
						r.stream, name, target, strings.TrimPrefix(suffix, "."))
					resp := createConsumer(t, c.client, "$JS.API.CONSUMER.CREATE."+r.stream+"."+name+suffix, body)
					if stored, _ := c.ejs.StreamNameBySubject(ctx, target); stored == r.stream {
						require.NotNil(t, resp.Error, "%s delivering to %s", r.stream, target)
						require.Equal(t, 10081, resp.Error.ErrCode, "a cycle: %s", resp.Error.Description)
						continue
					}
					require.Nil(t, resp.Error, "the server accepts %s delivering to %s", r.stream, target)
					created = append(created, struct{ stream, name string }{r.stream, name})
					if live == nil {
						require.False(t, resp.PushBound, "%s delivering to %s has no subscriber, so it delivers nothing", r.stream, target)
						continue
					}
					require.True(t, resp.PushBound, "%s delivering to %s", r.stream, target)
					// Every message of the stream is delivered there, under its own subject.
					for range streamMsgs(ctx, t, c.ejs, r.stream) {
						for _, sub := range []*nats.Subscription{live, all} {
							msg, err := sub.NextMsg(10 * time.Second)
							require.NoError(t, err, "%s delivers its messages to %s (%s)", r.stream, target, sub.Subject)
							require.True(t, strings.HasPrefix(msg.Subject, "memmie."+strings.ToLower(strings.TrimPrefix(r.stream, "MEMMIE_"))+"."), msg.Subject)
							require.Equal(t, r.stream, msg.Header.Get(jetstream.ExpectedStreamHeader), "the copy names its stream")
						}
					}
				}
			}
			if live != nil {
				require.NoError(t, live.Unsubscribe())
				require.NoError(t, all.Unsubscribe())
			}
		}
		// The JetStream API and the acks of memmie's consumers: a copy delivered there would be
		// a request made by the server itself (a purge, with an empty filter). Their server-side
		// subscriptions are wildcards, which never make a push consumer deliver.
		for _, target := range []string{
			"$JS.API.STREAM.PURGE." + streams.Executions, "$JS.API.STREAM.DELETE." + streams.Deltas,
			"$JS.API.CONSUMER.DELETE." + streams.Executions + "." + runner.Name,
			"$JS.ACK." + streams.Executions + "." + runner.Name + ".1.1.1.1796120893125887810.0",
		} {
			for _, r := range readable {
				name := nextName()
				resp := createConsumer(t, c.client, "$JS.API.CONSUMER.CREATE."+r.stream+"."+name,
					fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"deliver_subject":%q,"ack_policy":"none"}}`, r.stream, name, target))
				require.Nil(t, resp.Error, "the server accepts %s delivering to %s", r.stream, target)
				require.False(t, resp.PushBound, "%s delivering to %s delivers nothing", r.stream, target)
				created = append(created, struct{ stream, name string }{r.stream, name})
			}
		}
		// The streams that were handed copies refused them.
		for name, want := range before {
			require.Equal(t, want, streamMsgs(ctx, t, c.ejs, name), "messages in %s", name)
		}
		for _, cons := range created {
			require.NoError(t, c.cjs.DeleteConsumer(ctx, cons.stream, cons.name), "the client deletes its consumer")
		}
	})

	t.Run("cannot touch memmie's durable consumers", func(t *testing.T) {
		ctx := testContext(t)
		for _, cfg := range engineDurables {
			name := cfg.Durable
			// Each form, on each stream the client reads: the rules name no stream.
			for _, r := range readable {
				s := r.stream
				hijack := fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"durable_name":%q,"ack_policy":"explicit","ack_wait":1000000000,"max_deliver":1}}`, s, name, name)
				c.denied(t, "$JS.API.CONSUMER.CREATE."+s+"."+name, hijack)
				c.denied(t, "$JS.API.CONSUMER.CREATE."+s+"."+name+"."+r.subject, hijack)
				c.denied(t, "$JS.API.CONSUMER.INFO."+s+"."+name, "")
				c.denied(t, "$JS.API.CONSUMER.DELETE."+s+"."+name, "")
				c.denied(t, "$JS.API.CONSUMER.MSG.NEXT."+s+"."+name, `{"batch":1}`)
				c.denied(t, "$JS.ACK."+s+"."+name+".1.1.1.1796120893125887810.0", "")
				// Not allowed at all: the name in the body, the legacy durable form, the
				// second ack format, and the other consumer operations.
				c.denied(t, "$JS.API.CONSUMER.CREATE."+s, strings.Replace(hijack, fmt.Sprintf(`"durable_name":%q,`, name), "", 1))
				c.denied(t, "$JS.API.CONSUMER.DURABLE.CREATE."+s+"."+name, hijack)
				c.denied(t, "$JS.ACK._.hash."+s+"."+name+".1.1.1.1796120893125887810.0.token", "")
				for _, op := range []string{"PAUSE", "RESET", "UNPIN", "LEADER.STEPDOWN"} {
					c.denied(t, "$JS.API.CONSUMER."+op+"."+s+"."+name, "{}")
				}
			}
			// The same through nats.go, as a client would try.
			x := streams.Executions
			c.deniedCall(t, "$JS.API.CONSUMER.CREATE."+x+"."+name, func(ctx context.Context) error {
				changed := cfg
				changed.AckWait, changed.MaxDeliver, changed.FilterSubjects = time.Second, 1, []string{"memmie.executions.>", "memmie.executions.*.x"}
				_, err := c.cjs.CreateOrUpdateConsumer(ctx, x, changed)
				return err
			})
			c.deniedCall(t, "$JS.API.CONSUMER.CREATE."+x+"."+name+".memmie.executions.>", func(ctx context.Context) error {
				_, err := c.cjs.CreateOrUpdateConsumer(ctx, x, jetstream.ConsumerConfig{Durable: name, FilterSubject: "memmie.executions.>", AckPolicy: jetstream.AckExplicitPolicy})
				return err
			})
			c.deniedCall(t, "$JS.API.CONSUMER.DELETE."+x+"."+name, func(ctx context.Context) error {
				return c.cjs.DeleteConsumer(ctx, x, name)
			})
			c.deniedCall(t, "$JS.API.CONSUMER.INFO."+x+"."+name, func(ctx context.Context) error {
				_, err := c.cjs.Consumer(ctx, x, name)
				return err
			})
		}

		// Acking a real message of the runner's: the engine pulls it, the client acks it.
		cons, err := c.ejs.Consumer(ctx, streams.Executions, runner.Name)
		require.NoError(t, err)
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		require.NoError(t, err)
		var pulled []jetstream.Msg
		for msg := range batch.Messages() {
			pulled = append(pulled, msg)
		}
		require.Len(t, pulled, 1)
		reply := pulled[0].Reply()
		require.True(t, strings.HasPrefix(reply, "$JS.ACK."+streams.Executions+"."+runner.Name+"."), reply)
		c.denied(t, reply, "")

		// Untouched: the same config, the message still waiting for the runner's ack.
		for _, cfg := range engineDurables {
			cons, err := c.ejs.Consumer(ctx, streams.Executions, cfg.Durable)
			require.NoError(t, err, "%s still exists", cfg.Durable)
			info, err := cons.Info(ctx)
			require.NoError(t, err)
			require.Equal(t, cfg.AckWait, info.Config.AckWait, cfg.Durable)
			require.Equal(t, cfg.MaxDeliver, info.Config.MaxDeliver, cfg.Durable)
			if cfg.Durable == runner.Name {
				require.Equal(t, 1, info.NumAckPending, "the client's ack was dropped")
			}
		}
	})

	t.Run("cannot manage streams", func(t *testing.T) {
		for _, r := range readable {
			for _, op := range []string{"DELETE", "UPDATE", "PURGE", "CREATE", "MSG.DELETE", "SNAPSHOT"} {
				c.denied(t, "$JS.API.STREAM."+op+"."+r.stream, "{}")
			}
			c.denied(t, "$JS.API.CONSUMER.NAMES."+r.stream, "{}")
			c.denied(t, "$JS.API.CONSUMER.LIST."+r.stream, "{}")
		}
		c.denied(t, "$JS.API.STREAM.LIST", "{}")
		c.deniedCall(t, "$JS.API.STREAM.DELETE."+streams.Deltas, func(ctx context.Context) error {
			return c.cjs.DeleteStream(ctx, streams.Deltas)
		})
		c.deniedCall(t, "$JS.API.STREAM.PURGE."+streams.Executions, func(ctx context.Context) error {
			s, err := c.cjs.Stream(ctx, streams.Executions)
			if err != nil {
				return err
			}
			return s.Purge(ctx)
		})
	})

	t.Run("cannot read the other streams", func(t *testing.T) {
		for _, s := range []string{streams.Blobs, streams.Inbox, streams.Leases, streams.Definitions, streams.DeadLetter, streams.Triggers} {
			c.denied(t, "$JS.API.STREAM.INFO."+s, "")
			c.denied(t, "$JS.API.CONSUMER.CREATE."+s+".mine", fmt.Sprintf(`{"stream_name":%q,"config":{"name":"mine"}}`, s))
			c.denied(t, "$JS.API.DIRECT.GET."+s, `{"seq":1}`)
			c.denied(t, "$JS.API.STREAM.MSG.GET."+s, `{"seq":1}`)
		}
		c.deniedCall(t, "$JS.API.CONSUMER.CREATE."+streams.Inbox+".mine", func(ctx context.Context) error {
			_, err := c.cjs.CreateConsumer(ctx, streams.Inbox, jetstream.ConsumerConfig{Name: "mine", AckPolicy: jetstream.AckExplicitPolicy})
			return err
		})
		for _, subject := range []string{"memmie.inbox.>", "memmie.blobs.>", "memmie.definitions.>", "memmie.deadletter.>", "memmie.leases.>",
			"memmie.triggers.>",
			// A push consumer delivers to any subject with a subscriber: a subscriber here would
			// let it copy messages into execution histories.
			"memmie.executions.>", "memmie.executions.e1.completed",
			// memmie's own reply prefix (see TestNATSConfEngineConsumers).
			"_INBOX_memmie.>"} {
			c.deniedSub(t, subject)
		}
	})

	t.Run("cannot use the trigger matcher's durable, on any stream", func(t *testing.T) {
		// On the executions too, which the client may otherwise make consumers on: names
		// are denied on every stream.
		for _, s := range []string{streams.Triggers, streams.Executions} {
			n := triggers.Name
			c.denied(t, "$JS.API.CONSUMER.CREATE."+s+"."+n, fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"ack_policy":"explicit"}}`, s, n))
			c.denied(t, "$JS.API.CONSUMER.CREATE."+s+"."+n+".memmie.>", fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"filter_subject":"memmie.>"}}`, s, n))
			c.denied(t, "$JS.API.CONSUMER.INFO."+s+"."+n, "")
			c.denied(t, "$JS.API.CONSUMER.DELETE."+s+"."+n, "")
			c.denied(t, "$JS.API.CONSUMER.MSG.NEXT."+s+"."+n, `{"batch":1}`)
			c.denied(t, "$JS.ACK."+s+"."+n+".1.1.1.1796120893125887810.0", "")
		}
	})

	t.Run("cannot publish anything but blob events", func(t *testing.T) {
		ctx := testContext(t)
		for _, subject := range []string{
			"memmie.deltas.b1", "memmie.executions.e1.completed", "memmie.executions.e2.queued",
			"memmie.inbox.e1", "memmie.timers.e1.t1", "memmie.definitions.workflows.w1",
			"memmie.deadletter.runner", "memmie.leases.members.p1", "memmie.triggers.b1",
			"memmie.blobs.b1", "memmie.blobs.b1.created.x", "memmie.blobs.b1.archived",
		} {
			c.denied(t, subject, "{}")
			short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
			_, err := c.cjs.Publish(short, subject, []byte(`{}`), jetstream.WithRetryAttempts(0))
			cancelShort()
			require.Error(t, err, "a JetStream publish to %s must fail", subject)
		}
	})

	// Nothing the client tried to write landed.
	for name, want := range map[string]uint64{streams.Deltas: 2, streams.Executions: 3, streams.Blobs: 3, streams.Inbox: 0, streams.Triggers: 0} {
		s, err := c.ejs.Stream(ctx, name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, want, info.State.Msgs, "messages in %s", name)
	}
}

// consumerCreated is the server's answer to a consumer create request.
type consumerCreated struct {
	Error *struct {
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	PushBound bool `json:"push_bound"`
}

// createConsumer sends a consumer create request as nc and decodes the answer.
func createConsumer(t *testing.T, nc *nats.Conn, subject, body string) consumerCreated {
	t.Helper()
	msg, err := nc.Request(subject, []byte(body), 10*time.Second)
	require.NoError(t, err, "request %s", subject)
	var resp consumerCreated
	require.NoError(t, json.Unmarshal(msg.Data, &resp), "answer to %s: %s", subject, msg.Data)
	return resp
}

func streamMsgs(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, name)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	return info.State.Msgs
}

// TestNATSConfPushCopyWithoutExpectedStream shows why everything memmie writes to the streams a
// client may consume goes through stream.Append: a message stored without Nats-Expected-Stream
// is copied into another stream by a push consumer the client creates, under its own subject.
// When this test fails, the server has started refusing such deliver subjects itself.
func TestNATSConfPushCopyWithoutExpectedStream(t *testing.T) {
	c := startConf(t)
	ctx := testContext(t)
	require.NoError(t, stream.EnsureStreams(ctx, c.ejs, engine.StreamConfigs(streams.Options{})))
	_, err := c.ejs.Publish(ctx, "memmie.executions.e1.completed", []byte(`{}`), jetstream.WithMsgID("x1"))
	require.NoError(t, err)
	live, err := c.client.SubscribeSync("memmie.deltas.b9")
	require.NoError(t, err)
	require.NoError(t, c.client.Flush())
	x := streams.Executions
	resp := createConsumer(t, c.client, "$JS.API.CONSUMER.CREATE."+x+".copy",
		fmt.Sprintf(`{"stream_name":%q,"config":{"name":"copy","deliver_subject":"memmie.deltas.b9","ack_policy":"none"}}`, x))
	require.Nil(t, resp.Error)
	require.Eventually(t, func() bool { return streamMsgs(ctx, t, c.ejs, streams.Deltas) == 1 }, 20*time.Second, 10*time.Millisecond,
		"the copy lands in %s", streams.Deltas)
	s, err := c.ejs.Stream(ctx, streams.Deltas)
	require.NoError(t, err)
	copied, err := s.GetMsg(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, "memmie.executions.e1.completed", copied.Subject, "stored under the subject it had")
	_ = live.Unsubscribe()
}

// TestNATSConfEngineWritesAreNotCopied runs an execution through the engine, as nats.conf's
// engine user, and checks what keeps its history out of the client's push consumers' reach:
// every message the engine stored on MEMMIE_EXECUTIONS names its stream, and the copies a
// client's consumer hands to MEMMIE_DELTAS are refused. A writer that stores a message without
// Nats-Expected-Stream fails here.
func TestNATSConfEngineWritesAreNotCopied(t *testing.T) {
	c := startConf(t)
	ctx := testContext(t)
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(svc.Close)
	base, err := url.Parse(svc.URL)
	require.NoError(t, err)
	svcs, err := services.NewRegistry(services.Service{Name: "svc", BaseURL: base})
	require.NoError(t, err)
	require.NoError(t, stream.EnsureStreams(ctx, c.ejs, engine.StreamConfigs(streams.Options{})))
	reg, err := registry.New(c.ejs, registry.Config{})
	require.NoError(t, err)
	require.NoError(t, reg.Start(ctx))
	t.Cleanup(func() { _ = reg.Stop(context.Background()) })
	def, err := definitions.Parse("copied.yaml", []byte(`
id: copied
steps:
  - {id: call, type: api_call, service: svc, endpoint: /call, input_map: {n: $.input.n}}
  - {id: shape, type: transform, input_map: {ok: $.steps.call.output.ok}}
`), "")
	require.NoError(t, err)
	_, err = reg.Register(ctx, def)
	require.NoError(t, err)
	eng, err := engine.New(c.ejs, engine.Config{Definitions: reg, Services: svcs})
	require.NoError(t, err)
	require.NoError(t, eng.Open(ctx))
	t.Cleanup(func() {
		stop, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = eng.Close(stop)
	})
	id, _, err := eng.Start(ctx, engine.StartRequest{WorkflowID: "copied", Input: []byte(`{"n":1}`)})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := eng.Execution(ctx, id)
		return err == nil && st.Status == execution.StatusCompleted
	}, 30*time.Second, 20*time.Millisecond, "execution %s completes", id)

	stored := streamMsgs(ctx, t, c.ejs, streams.Executions)
	require.GreaterOrEqual(t, stored, uint64(5), "the execution's history")
	history, err := c.ejs.OrderedConsumer(ctx, streams.Executions, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	for range stored {
		msg, err := history.Next(jetstream.FetchMaxWait(10 * time.Second))
		require.NoError(t, err)
		require.Equal(t, streams.Executions, msg.Headers().Get(jetstream.ExpectedStreamHeader), "%s names its stream", msg.Subject())
	}

	live, err := c.client.SubscribeSync("memmie.deltas.b9")
	require.NoError(t, err)
	require.NoError(t, c.client.Flush())
	x := streams.Executions
	resp := createConsumer(t, c.client, "$JS.API.CONSUMER.CREATE."+x+".copy",
		fmt.Sprintf(`{"stream_name":%q,"config":{"name":"copy","deliver_subject":"memmie.deltas.b9","ack_policy":"none"}}`, x))
	require.Nil(t, resp.Error)
	require.True(t, resp.PushBound)
	for range stored {
		_, err := live.NextMsg(10 * time.Second)
		require.NoError(t, err, "the client's consumer delivers the history to memmie.deltas.b9")
	}
	// A barrier: the deltas stream takes its messages in order, so once this one is in, the
	// copies handed to it before were refused.
	_, err = stream.Append(ctx, c.ejs, streams.Deltas, []stream.Msg{{Subject: "memmie.deltas.b8", Data: []byte(`{}`), ID: "barrier"}}, stream.Expect{})
	require.NoError(t, err)
	require.Equal(t, uint64(1), streamMsgs(ctx, t, c.ejs, streams.Deltas), "MEMMIE_DELTAS holds the barrier alone")
}

// TestNATSConfEngineConsumers starts the engine as nats.conf's engine user, with its own
// reply prefix, and checks that every durable consumer it creates is out of the client's
// reach: a durable that nats.conf does not deny by name fails here.
func TestNATSConfEngineConsumers(t *testing.T) {
	c := startConf(t)
	ctx := testContext(t)
	// A client listening on every reply subject it may subscribe to sees none of the engine's
	// replies (pulled commands, stream reads).
	replies, err := c.client.SubscribeSync("_INBOX.>")
	require.NoError(t, err)
	require.NoError(t, c.client.Flush())
	eng, err := engine.New(c.ejs, engine.Config{Streams: streams.Options{Partitions: 2}})
	require.NoError(t, err)
	require.NoError(t, eng.Open(ctx), "the engine runs as the engine user")
	t.Cleanup(func() {
		stop, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = eng.Close(stop)
	})

	type durable struct{ stream, name string }
	var found []durable
	// The orchestrator adds its partitions' consumers once it has its partitions.
	require.Eventually(t, func() bool {
		found = found[:0]
		for name := range c.ejs.StreamNames(ctx).Name() {
			s, err := c.ejs.Stream(ctx, name)
			require.NoError(t, err)
			for info := range s.ListConsumers(ctx).Info() {
				if info.Config.Durable != "" {
					found = append(found, durable{name, info.Name})
				}
			}
		}
		return len(found) >= 4 // runner, timers and two partitions
	}, 20*time.Second, 50*time.Millisecond, "the engine's durables: %v", found)
	t.Logf("engine durables: %v", found)

	for _, d := range found {
		s, n := d.stream, d.name
		c.denied(t, "$JS.API.CONSUMER.CREATE."+s+"."+n, fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"ack_policy":"explicit","ack_wait":1000000000}}`, s, n))
		c.denied(t, "$JS.API.CONSUMER.CREATE."+s+"."+n+".memmie.>", fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"filter_subject":"memmie.>"}}`, s, n))
		c.denied(t, "$JS.API.CONSUMER.INFO."+s+"."+n, "")
		c.denied(t, "$JS.API.CONSUMER.DELETE."+s+"."+n, "")
		c.denied(t, "$JS.API.CONSUMER.MSG.NEXT."+s+"."+n, `{"batch":1}`)
		c.denied(t, "$JS.ACK."+s+"."+n+".1.1.1.1796120893125887810.0", "")
	}
	// Only answers to the client's own requests may have arrived there.
	own := c.client.NewRespInbox()
	own = own[:strings.LastIndex(own, ".")+1]
	for {
		msg, err := replies.NextMsg(10 * time.Millisecond)
		if err != nil {
			break
		}
		require.True(t, strings.HasPrefix(msg.Subject, own), "the client saw the engine's reply on %s", msg.Subject)
	}
}
