package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

// listedDeadLetter is what list prints of a row of GET /v1/deadletter; --json prints the rows
// whole.
type listedDeadLetter struct {
	ID         string     `json:"id"`
	Source     string     `json:"source"`
	Subject    string     `json:"subject"`
	Reason     string     `json:"reason"`
	RecordedAt time.Time  `json:"recorded_at"`
	RedrivenAt *time.Time `json:"redriven_at"`
}

// shownDeadLetter is GET /v1/deadletter/{id}, as show prints it.
type shownDeadLetter struct {
	listedDeadLetter
	Stream        string              `json:"stream"`
	StreamSeq     uint64              `json:"stream_seq"`
	Size          int                 `json:"size"`
	Truncated     bool                `json:"truncated"`
	Headers       map[string][]string `json:"headers"`
	Data          []byte              `json:"data"`
	Redrivable    bool                `json:"redrivable"`
	NotRedrivable string              `json:"not_redrivable"`
}

func newDeadLetterCmd() *cobra.Command {
	var af apiFlags
	cmd := &cobra.Command{
		Use:   "deadletter",
		Short: "Inspect dead-lettered messages and send one back",
		Long: `Inspects the messages that memmie could not process (stream MEMMIE_DEADLETTER), through the
HTTP API of a running memmie with a database (its dead_letters projection):

  list          lists them, newest first (--source, --limit, --all, --json)
  show ID       prints one with its reason, original subject, headers and data
  redrive ID    sends its original data and headers back to its original subject

A redrive takes an inbox command (memmie.inbox.<execution_id>) or a blob event
(memmie.blobs.<blob_id>.<kind>). It refuses the events of memmie's own histories
(MEMMIE_EXECUTIONS, MEMMIE_DELTAS, MEMMIE_DEFINITIONS), which only memmie appends to and
which are still in their streams, and a message cut short when it was recorded. Redriving
one twice within the stream's duplicate window (2 minutes) sends it once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	addAPIFlags(cmd.PersistentFlags(), &af)
	client := func() (*apiClient, error) { return newAPIClient(af) }

	var (
		source string
		pf     pageFlags
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, newest first",
		Long: `Lists the dead letters, newest first: a table of id, source, original subject, recorded
and redriven times and reason, or the API's answer with --json. One page of --limit rows; when
more follow, the cursor of the next page is printed on stderr (give it to --cursor), and --all
follows them to the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return pf.list(cmd, client, "/v1/deadletter", map[string]string{"source": source}, "dead_letters", printDeadLetters)
		},
	}
	list.Flags().StringVar(&source, "source", "", "only the dead letters of this source (orchestrator, runner, projection-executions, ...)")
	pf.add(list.Flags())

	var showJSON bool
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Print a dead letter with its original message",
		Long: `Prints a dead letter: its source, reason, original subject and stream position, headers,
whether it can be redriven, and the original data, as text when it is printable UTF-8 and in
base64 otherwise. --json prints the API's answer (data in base64).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := callAPI(cmd, client, http.MethodGet, deadLetterPath(args[0], ""))
			if err != nil {
				return err
			}
			if showJSON {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var d shownDeadLetter
			if err := json.Unmarshal(raw, &d); err != nil {
				return fmt.Errorf("decode the dead letter: %w", err)
			}
			return printDeadLetter(cmd.OutOrStdout(), d)
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print the API's answer as JSON")

	var redriveJSON bool
	redrive := &cobra.Command{
		Use:   "redrive ID",
		Short: "Send a dead letter's original message back to its subject",
		Long: `Publishes the dead letter's original data and headers again to its original subject, with
a Nats-Msg-Id of its own, and records the redrive on MEMMIE_DEADLETTER (the dead letter shows
it as redriven_at). A second redrive within the target stream's duplicate window sends
nothing new and says so; after it, a second redrive sends a second copy, which the consumer
takes as the same message arriving again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := callAPI(cmd, client, http.MethodPost, deadLetterPath(args[0], "/redrive"))
			if err != nil {
				return err
			}
			if redriveJSON {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var sent struct {
				Subject   string `json:"subject"`
				Stream    string `json:"stream"`
				Seq       uint64 `json:"seq"`
				Duplicate bool   `json:"duplicate"`
			}
			if err := json.Unmarshal(raw, &sent); err != nil {
				return fmt.Errorf("decode the answer: %w", err)
			}
			if sent.Duplicate {
				fmt.Fprintf(cmd.OutOrStdout(), "%s was redriven already: %s had it (seq %d); nothing new was sent\n",
					args[0], sent.Stream, sent.Seq)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "redriven %s to %s (%s seq %d)\n", args[0], sent.Subject, sent.Stream, sent.Seq)
			return nil
		},
	}
	redrive.Flags().BoolVar(&redriveJSON, "json", false, "print the API's answer as JSON")

	cmd.AddCommand(list, show, redrive)
	return cmd
}

func deadLetterPath(id, tail string) string { return "/v1/deadletter/" + url.PathEscape(id) + tail }

// oneLine cuts s to its first line and n runes, for a table cell.
func oneLine(s string, n int) string {
	s, _, cut := strings.Cut(s, "\n")
	if utf8.RuneCountInString(s) > n {
		s, cut = string([]rune(s)[:n]), true
	}
	if cut {
		s += "…"
	}
	return s
}

func printDeadLetters(out io.Writer, rows []json.RawMessage) error {
	return printTable(out, "ID\tSOURCE\tSUBJECT\tRECORDED AT\tREDRIVEN AT\tREASON", "a dead letter", rows,
		func(d listedDeadLetter) []string {
			redriven := "-"
			if d.RedrivenAt != nil {
				redriven = d.RedrivenAt.UTC().Format(time.RFC3339)
			}
			return []string{d.ID, d.Source, d.Subject, d.RecordedAt.UTC().Format(time.RFC3339), redriven, oneLine(d.Reason, 80)}
		})
}

func printDeadLetter(out io.Writer, d shownDeadLetter) error {
	var b strings.Builder
	fmt.Fprintf(&b, "id:          %s\nsource:      %s\nreason:      %s\nsubject:     %s\n", d.ID, d.Source, d.Reason, d.Subject)
	if d.Stream != "" {
		fmt.Fprintf(&b, "stored in:   %s seq %d\n", d.Stream, d.StreamSeq)
	}
	fmt.Fprintf(&b, "recorded at: %s\n", d.RecordedAt.UTC().Format(time.RFC3339Nano))
	if d.RedrivenAt != nil {
		fmt.Fprintf(&b, "redriven at: %s\n", d.RedrivenAt.UTC().Format(time.RFC3339Nano))
	}
	if d.Redrivable {
		b.WriteString("redrivable:  yes\n")
	} else {
		fmt.Fprintf(&b, "redrivable:  no: %s\n", d.NotRedrivable)
	}
	if len(d.Headers) > 0 {
		b.WriteString("headers:\n")
		keys := make([]string, 0, len(d.Headers))
		for k := range d.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			for _, v := range d.Headers[k] {
				fmt.Fprintf(&b, "  %s: %s\n", k, v)
			}
		}
	}
	size := fmt.Sprintf("%d bytes", d.Size)
	if d.Truncated {
		size += ", cut when it was recorded"
	}
	if printable(d.Data) {
		fmt.Fprintf(&b, "data (%s):\n%s\n", size, d.Data)
	} else {
		fmt.Fprintf(&b, "data (%s, base64):\n%s\n", size, base64.StdEncoding.EncodeToString(d.Data))
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// printable reports whether b reads as text on a terminal: UTF-8 without control characters
// but tabs and newlines.
func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if unicode.IsControl(r) && r != '\n' && r != '\t' && r != '\r' {
			return false
		}
	}
	return true
}
