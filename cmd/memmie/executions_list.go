package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/memmie/memmie/internal/app/api"
)

// listedExecution is what list prints of a row of GET /v1/executions; --json prints the rows
// whole.
type listedExecution struct {
	ExecutionID string    `json:"execution_id"`
	WorkflowID  string    `json:"workflow_id"`
	Status      string    `json:"status"`
	Priority    int       `json:"priority"`
	QueuedAt    time.Time `json:"queued_at"`
}

func newExecutionsListCmd(client func() (*apiClient, error)) *cobra.Command {
	var (
		status, workflow string
		pf               pageFlags
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List executions, newest first",
		Long: `Lists the executions of a running memmie, newest first, from its executions projection
(a memmie with a database): a table of id, workflow, status, priority and queued time, or the
API's answer with --json. One page of --limit rows; when more follow, the cursor of the next
page is printed on stderr (give it to --cursor), and --all follows them to the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return pf.list(cmd, client, "/v1/executions", map[string]string{"status": status, "workflow_id": workflow},
				"executions", printExecutions)
		},
	}
	f := cmd.Flags()
	f.StringVar(&status, "status", "", "only executions of this status (queued, running, compensating, retry_scheduled, completed, failed, cancelled)")
	f.StringVar(&workflow, "workflow", "", "only executions of this workflow id")
	pf.add(f)
	return cmd
}

// pageFlags are the paging flags of a list command.
type pageFlags struct {
	limit       int
	cursor      string
	all, asJSON bool
}

// add defines --limit, --cursor, --all and --json on f.
func (pf *pageFlags) add(f *pflag.FlagSet) {
	f.IntVar(&pf.limit, "limit", api.DefaultListLimit, fmt.Sprintf("rows per page (at most %d)", api.MaxListLimit))
	f.StringVar(&pf.cursor, "cursor", "", "start after the page that printed this cursor")
	f.BoolVar(&pf.all, "all", false, "follow the pages to the last one")
	f.BoolVar(&pf.asJSON, "json", false, "print the rows as JSON, every field")
}

// list GETs path with the filters that are set, a page of --limit rows (under key in the
// answer) or, with --all, every page, and prints them: the API's answer with --json, else
// with print and then, when more follow, the next cursor on stderr.
func (pf *pageFlags) list(cmd *cobra.Command, client func() (*apiClient, error), path string, filters map[string]string,
	key string, print func(io.Writer, []json.RawMessage) error) error {
	if pf.limit < 1 || pf.limit > api.MaxListLimit {
		return fmt.Errorf("--limit %d: want 1 to %d", pf.limit, api.MaxListLimit)
	}
	c, err := client()
	if err != nil {
		return err
	}
	var rows []json.RawMessage
	next := pf.cursor
	for {
		q := url.Values{"limit": {strconv.Itoa(pf.limit)}}
		for k, v := range filters {
			if v != "" {
				q.Set(k, v)
			}
		}
		if next != "" {
			q.Set("cursor", next)
		}
		var page map[string]json.RawMessage
		if err := c.do(cmd.Context(), http.MethodGet, path+"?"+q.Encode(), nil, &page); err != nil {
			return err
		}
		var (
			pageRows []json.RawMessage
			pageNext string
		)
		if err := unmarshalPresent(page[key], &pageRows); err != nil {
			return fmt.Errorf("decode the page's %s: %w", key, err)
		}
		if err := unmarshalPresent(page["next"], &pageNext); err != nil {
			return fmt.Errorf("decode the page's next: %w", err)
		}
		rows, next = append(rows, pageRows...), pageNext
		if !pf.all || next == "" {
			break
		}
	}
	if pf.asJSON {
		// Keys in the API's order: json sorts a map's, and both lists' keys sort before next.
		answer := map[string]any{key: append([]json.RawMessage{}, rows...)}
		if next != "" {
			answer["next"] = next
		}
		b, err := json.Marshal(answer)
		if err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), b)
	}
	if err := print(cmd.OutOrStdout(), rows); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "more: --cursor %s (or --all)\n", next)
	}
	return nil
}

// unmarshalPresent is json.Unmarshal, but leaves v as it is when data is absent.
func unmarshalPresent(data json.RawMessage, v any) error {
	if data == nil {
		return nil
	}
	return json.Unmarshal(data, v)
}

func printExecutions(out io.Writer, rows []json.RawMessage) error {
	return printTable(out, "ID\tWORKFLOW\tSTATUS\tPRIORITY\tQUEUED AT", "an execution", rows, func(e listedExecution) []string {
		return []string{e.ExecutionID, e.WorkflowID, e.Status, strconv.Itoa(e.Priority), e.QueuedAt.UTC().Format(time.RFC3339)}
	})
}

// printTable prints a table of rows under header (tab-separated), each row decoded as a T
// (what names one in errors) and cut into its cells.
func printTable[T any](out io.Writer, header, what string, rows []json.RawMessage, cells func(T) []string) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, raw := range rows {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode %s: %w", what, err)
		}
		fmt.Fprintln(tw, strings.Join(cells(v), "\t"))
	}
	return tw.Flush()
}
