package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
)

// natsClientFlags are the flags of a command that reaches NATS as a client does.
type natsClientFlags struct {
	url, creds, user, password string
}

func (o *natsClientFlags) add(f *pflag.FlagSet) {
	f.StringVar(&o.url, "nats-url", defaultNATSURL, "NATS server or cluster to connect to")
	f.StringVar(&o.creds, "nats-creds", "", "NATS credentials file")
	f.StringVar(&o.user, "nats-user", "", "NATS user (e.g. the client user of nats.conf)")
	f.StringVar(&o.password, "nats-password", "", "password of --nats-user")
}

// connect connects as a plain client: replies on _INBOX, as the client user of nats.conf may
// receive them.
func (o *natsClientFlags) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.Name(name)}
	if o.user != "" || o.password != "" {
		opts = append(opts, nats.UserInfo(o.user, o.password))
	}
	if o.creds != "" {
		opts = append(opts, nats.UserCredentials(o.creds))
	}
	nc, err := nats.Connect(o.url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", o.url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// publishTimeout bounds a blob event's publish, retries of the client included.
const publishTimeout = 30 * time.Second

func newBlobsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "blobs",
		Short: "Publish blob events and read blobs",
		Long: `Publishes a blob event on NATS, as a client does, and reads a blob through the HTTP API
of a running memmie with a database (its blobs projection):

  publish BLOB_ID created|updated|deleted --data JSON|@file   publishes on memmie.blobs.<id>.<kind>
  show BLOB_ID [--version N] [--json]                         prints the blob at its last or a given version
  diff BLOB_ID [--from N] [--to M] [--json]                   prints what changed between two versions`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}

	var (
		nf          natsClientFlags
		data, msgID string
		publishJSON bool
	)
	publish := &cobra.Command{
		Use:   "publish BLOB_ID created|updated|deleted",
		Short: "Publish a blob event, as a client does",
		Long: `Publishes the contract's blob event data on memmie.blobs.<BLOB_ID>.<kind> (stream
MEMMIE_BLOBS) with a Nats-Msg-Id, exactly as a client would, and prints where it was stored.

--data is the event's data object (blob_id, user_id, provider_ids, content, metadata), or a
CloudEvents 1.0 envelope around it; @file reads it from a file, @- from stdin. A data object
without blob_id gets BLOB_ID's; without --data the event is {"blob_id": BLOB_ID}. The event is
checked against the contract first, as memmie checks it (unknown fields, a blob_id that is not
BLOB_ID, metadata that is not an object, an update with neither content nor metadata): an
event memmie would dead-letter for its shape is not published.

The Nats-Msg-Id is random: running the command again publishes a new event. --msg-id sets
it, so that publishing again within the stream's duplicate window (2 minutes) stores
nothing new, and an event memmie has processed is a duplicate past that window too.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return publishBlob(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), nf, args[0], args[1], data, msgID, publishJSON)
		},
	}
	pf := publish.Flags()
	pf.StringVar(&data, "data", "", "the event's data: JSON, @file or @- (stdin); default {\"blob_id\": BLOB_ID}")
	pf.StringVar(&msgID, "msg-id", "", "the Nats-Msg-Id (default: a random UUID, a new event each run)")
	pf.BoolVar(&publishJSON, "json", false, "print where it was stored as JSON")
	nf.add(pf)

	var (
		af       apiFlags
		version  int64
		showJSON bool
	)
	show := &cobra.Command{
		Use:   "show BLOB_ID",
		Short: "Print a blob at its last or a given version",
		Long: `Prints a blob as the blobs projection of a running memmie holds it (GET /v1/blobs/{id}):
its version, owner, whether it was deleted, where it was derived from, its last change, its
content and metadata. --version N prints it at version N, rebuilt from its deltas. --json
prints the API's answer.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			client := func() (*apiClient, error) { return newAPIClient(af) }
			path := "/v1/blobs/" + url.PathEscape(args[0])
			if cmd.Flags().Changed("version") {
				if version < 1 {
					return fmt.Errorf("--version %d: versions count from 1", version)
				}
				path += "?version=" + strconv.FormatInt(version, 10)
			}
			raw, err := callAPI(cmd, client, http.MethodGet, path)
			if err != nil {
				return err
			}
			if showJSON {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			return printBlob(cmd.OutOrStdout(), raw)
		},
	}
	show.Flags().Int64Var(&version, "version", 0, "the version to print (default: the last)")
	show.Flags().BoolVar(&showJSON, "json", false, "print the API's answer as JSON")
	addAPIFlags(show.Flags(), &af)

	cmd.AddCommand(publish, show, newBlobsDiffCmd())
	return cmd
}

func newBlobsDiffCmd() *cobra.Command {
	var (
		af       apiFlags
		from, to int64
		asJSON   bool
	)
	diff := &cobra.Command{
		Use:   "diff BLOB_ID",
		Short: "Print what changed in a blob between two versions",
		Long: `Prints the RFC 6902 patch that turns a blob's document (content, metadata, deleted,
derived) at version --from into its document at version --to, as the blobs projection of a
running memmie holds them (GET /v1/blobs/{id}/diff), one operation a line. --to defaults to the
last version, --from to the version before --to; version 0 is the blob before its create.
--json prints the API's answer.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			for name, v := range map[string]int64{"from": from, "to": to} {
				if !cmd.Flags().Changed(name) {
					continue
				}
				if v < 0 {
					return fmt.Errorf("--%s %d: versions count from 0 (before the blob was created)", name, v)
				}
				q.Set(name, strconv.FormatInt(v, 10))
			}
			path := "/v1/blobs/" + url.PathEscape(args[0]) + "/diff"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			raw, err := callAPI(cmd, func() (*apiClient, error) { return newAPIClient(af) }, http.MethodGet, path)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			return printDiff(cmd.OutOrStdout(), raw)
		},
	}
	diff.Flags().Int64Var(&from, "from", 0, "the version to compare from (default: the one before --to)")
	diff.Flags().Int64Var(&to, "to", 0, "the version to compare to (default: the last)")
	diff.Flags().BoolVar(&asJSON, "json", false, "print the API's answer as JSON")
	addAPIFlags(diff.Flags(), &af)
	return diff
}

// shownDiff is GET /v1/blobs/{id}/diff, as diff prints it.
type shownDiff struct {
	BlobID string `json:"blob_id"`
	From   int64  `json:"from"`
	To     int64  `json:"to"`
	Patch  []struct {
		Op    string          `json:"op"`
		From  string          `json:"from"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	} `json:"patch"`
}

// printDiff prints a diff as "blob B, version N to M:" and its operations, one a line:
// "replace /content/a 1", "move /content/b from /content/a", "remove /metadata/x".
func printDiff(out io.Writer, raw json.RawMessage) error {
	var d shownDiff
	if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("decode the diff: %w", err)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "blob %s, version %d to %d:", d.BlobID, d.From, d.To)
	if len(d.Patch) == 0 {
		sb.WriteString(" no change")
	}
	sb.WriteByte('\n')
	for _, op := range d.Patch {
		fmt.Fprintf(&sb, "  %s %s", op.Op, op.Path)
		if op.From != "" {
			fmt.Fprintf(&sb, " from %s", op.From)
		}
		if len(op.Value) > 0 {
			sb.WriteString(" " + string(op.Value))
		}
		sb.WriteByte('\n')
	}
	_, err := io.WriteString(out, sb.String())
	return err
}

// published is what blobs publish --json prints.
type published struct {
	Subject   string `json:"subject"`
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	MsgID     string `json:"msg_id"`
	Duplicate bool   `json:"duplicate"`
}

func publishBlob(ctx context.Context, stdin io.Reader, out io.Writer, nf natsClientFlags, blobID, kind, data, msgID string,
	asJSON bool) error {
	subject, err := events.BlobSubject(blobID, events.BlobKind(kind))
	if err != nil {
		return fmt.Errorf("blobs publish %s %s: %w", blobID, kind, err)
	}
	body, err := readData(data, stdin)
	if err != nil {
		return err
	}
	if body == nil {
		body = []byte("{}")
	}
	if body, err = withBlobID(body, blobID); err != nil {
		return err
	}
	if _, _, err := events.DecodeBlobEvent(subject, body); err != nil {
		return fmt.Errorf("--data: %w (nothing published)", err)
	}
	if msgID == "" {
		msgID = uuid.NewString()
	} else if len(msgID) > events.MaxTokenLength {
		return fmt.Errorf("--msg-id: %d bytes, at most %d", len(msgID), events.MaxTokenLength)
	}

	nc, js, err := nf.connect("memmie blobs publish")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	ack, err := js.Publish(ctx, subject, body, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(streams.Blobs))
	if err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	p := published{Subject: subject, Stream: ack.Stream, Seq: ack.Sequence, MsgID: msgID, Duplicate: ack.Duplicate}
	if asJSON {
		b, err := json.Marshal(p)
		if err != nil {
			return err
		}
		return printJSON(out, b)
	}
	if p.Duplicate {
		_, err = fmt.Fprintf(out, "%s: a duplicate of %s seq %d (Nats-Msg-Id %s was published within the duplicate window); nothing new was stored\n",
			subject, p.Stream, p.Seq, msgID)
		return err
	}
	_, err = fmt.Fprintf(out, "published %s (%s seq %d, Nats-Msg-Id %s)\n", subject, p.Stream, p.Seq, msgID)
	return err
}

// readData returns the --data value: literal, @file or @- (stdin); nil when empty.
func readData(v string, stdin io.Reader) ([]byte, error) {
	return readJSONFlag("--data", v, stdin, events.MaxEventSize)
}

// withBlobID returns a data object with blob_id set to id when it has none, its bytes
// otherwise unchanged; a CloudEvents envelope or anything but an object is returned as it is,
// for the contract's check to judge.
func withBlobID(body []byte, id string) ([]byte, error) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return body, nil
	}
	if _, ok := fields["blob_id"]; ok {
		return body, nil
	}
	if _, ok := fields["specversion"]; ok {
		return body, nil
	}
	idJSON, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	rest := bytes.TrimSpace(body)[1:] // after the object's {
	sep := []byte(",")
	if len(fields) == 0 {
		sep = nil
	}
	out := append([]byte(`{"blob_id":`), idJSON...)
	out = append(out, sep...)
	return append(out, rest...), nil
}

// shownBlob is GET /v1/blobs/{id}, as show prints it.
type shownBlob struct {
	BlobID      string               `json:"blob_id"`
	UserID      string               `json:"user_id"`
	Version     int64                `json:"version"`
	Content     json.RawMessage      `json:"content"`
	Metadata    json.RawMessage      `json:"metadata"`
	Deleted     bool                 `json:"deleted"`
	DerivedFrom *events.Derivation   `json:"derived_from"`
	Derived     []string             `json:"derived"`
	LastDeltaID string               `json:"last_delta_id"`
	Last        events.DeltaMetadata `json:"last"`
	UpdatedAt   time.Time            `json:"updated_at"`
}

func printBlob(out io.Writer, raw json.RawMessage) error {
	var b shownBlob
	if err := json.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("decode the blob: %w", err)
	}
	var sb strings.Builder
	line := func(k, v string) { fmt.Fprintf(&sb, "%-13s %s\n", k+":", v) }
	line("blob", b.BlobID)
	line("version", strconv.FormatInt(b.Version, 10))
	if b.UserID != "" {
		line("owner", b.UserID)
	}
	line("deleted", strconv.FormatBool(b.Deleted))
	if d := b.DerivedFrom; d != nil {
		line("derived from", fmt.Sprintf("%s by execution %s (depth %d)", d.BlobID, d.ExecutionID, d.Depth))
	}
	if len(b.Derived) > 0 {
		line("derived", strings.Join(b.Derived, ", "))
	}
	line("updated at", b.UpdatedAt.UTC().Format(time.RFC3339Nano))
	line("last change", b.LastDeltaID+lineage(b.Last))
	line("content", indentJSON(b.Content))
	line("metadata", indentJSON(b.Metadata))
	_, err := io.WriteString(out, sb.String())
	return err
}

// lineage says where a delta came from, as " (execution X of workflow W, step S)" or
// " (event E)".
func lineage(m events.DeltaMetadata) string {
	var parts []string
	if m.ExecutionID != "" {
		s := "execution " + m.ExecutionID
		if m.WorkflowID != "" {
			s += " of " + m.WorkflowID
			if m.WorkflowRevision != 0 {
				s += " revision " + strconv.Itoa(m.WorkflowRevision)
			}
		}
		parts = append(parts, s)
		if m.StepID != "" {
			parts = append(parts, "step "+m.StepID)
		}
	} else if m.SourceEventID != "" {
		parts = append(parts, "event "+m.SourceEventID)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// indentJSON is v indented, continuation lines aligned under the value's column; v as it is
// when it does not indent.
func indentJSON(v json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Indent(&b, v, strings.Repeat(" ", 14), "  "); err != nil {
		return string(v)
	}
	return b.String()
}

func newDeltasCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "deltas",
		Short: "Follow the delta stream",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var (
		nf                          natsClientFlags
		fromStart, noFollow, asJSON bool
	)
	tail := &cobra.Command{
		Use:   "tail [BLOB_ID]",
		Short: "Follow the deltas of every blob, or of one",
		Long: `Follows MEMMIE_DELTAS (memmie.deltas.>, or memmie.deltas.<BLOB_ID>) with an ordered
consumer of its own, as any client may, and prints one line per delta:

  <timestamp> <blob_id> v<version> <type> [<path>] [= <new value>] [(where it came from)]

New values longer than 60 characters are cut. --json prints each delta's CloudEvents envelope whole,
one per line. By default it prints the deltas appended from now on; --from-start replays the
stream from its first delta, then follows. --no-follow stops once it has printed every delta
the stream holds (none: at once), for scripts. Ctrl-C stops it.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			filter := "memmie.deltas.>"
			if len(args) == 1 {
				var err error
				if filter, err = events.DeltaSubject(args[0]); err != nil {
					return fmt.Errorf("deltas tail %s: %w", args[0], err)
				}
			}
			return tailDeltas(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), nf, filter, fromStart, noFollow, asJSON)
		},
	}
	f := tail.Flags()
	f.BoolVar(&fromStart, "from-start", false, "replay the stream from its first delta, then follow")
	f.BoolVar(&noFollow, "no-follow", false, "stop once every delta the stream holds is printed")
	f.BoolVar(&asJSON, "json", false, "print each delta's CloudEvents envelope, one per line")
	nf.add(f)
	cmd.AddCommand(tail)
	return cmd
}

func tailDeltas(ctx context.Context, out, errOut io.Writer, nf natsClientFlags, filter string, fromStart, noFollow, asJSON bool) error {
	nc, js, err := nf.connect("memmie deltas tail")
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy}
	if fromStart {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	cons, err := js.OrderedConsumer(ctx, streams.Deltas, cfg)
	if err != nil {
		return fmt.Errorf("consume %s (%s): %w", streams.Deltas, filter, err)
	}
	if noFollow {
		info, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("consume %s (%s): %w", streams.Deltas, filter, err)
		}
		if info.NumPending == 0 {
			return nil
		}
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume %s (%s): %w", streams.Deltas, filter, err)
	}
	defer it.Stop()
	go func() {
		<-ctx.Done()
		it.Stop() // ends Next
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("consume %s (%s): %w", streams.Deltas, filter, err)
		}
		if err := printDelta(out, errOut, m, asJSON); err != nil {
			return err
		}
		if noFollow {
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("consume %s: %w", streams.Deltas, err)
			}
			if md.NumPending == 0 {
				return nil
			}
		}
	}
}

// printDelta prints a message of MEMMIE_DELTAS: its envelope with asJSON, else a line of the
// delta; what is not a delta is reported on errOut.
func printDelta(out, errOut io.Writer, m jetstream.Msg, asJSON bool) error {
	if asJSON {
		_, err := fmt.Fprintf(out, "%s\n", bytes.TrimSpace(m.Data()))
		return err
	}
	ev, err := events.Decode(m.Data())
	d, ok := ev.Data.(*events.Delta)
	if err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("an event of type %s", ev.Type)
		}
		_, werr := fmt.Fprintf(errOut, "%s: not a delta: %v\n", m.Subject(), err)
		return werr
	}
	_, err = fmt.Fprintln(out, deltaLine(d))
	return err
}

// deltaLine is a delta on one line.
func deltaLine(d *events.Delta) string {
	parts := []string{d.Timestamp.UTC().Format(time.RFC3339Nano), d.BlobID, "v" + strconv.FormatInt(d.Version, 10), d.Type}
	if d.Path != "" {
		p := d.Path
		if d.From != "" {
			p = d.From + " -> " + d.Path
		}
		parts = append(parts, p)
	}
	if len(d.NewValue) > 0 && d.Type != events.DeltaDelete {
		parts = append(parts, "= "+abbreviate(string(d.NewValue)))
	}
	return strings.Join(parts, " ") + lineage(d.Metadata)
}
