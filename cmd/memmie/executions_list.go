package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

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
		status, workflow, cursor string
		limit                    int
		all, asJSON              bool
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
			if limit < 1 || limit > api.MaxListLimit {
				return fmt.Errorf("--limit %d: want 1 to %d", limit, api.MaxListLimit)
			}
			c, err := client()
			if err != nil {
				return err
			}
			var rows []json.RawMessage
			next := cursor
			for {
				page, err := listPage(cmd.Context(), c, status, workflow, limit, next)
				if err != nil {
					return err
				}
				rows = append(rows, page.Executions...)
				next = page.Next
				if !all || next == "" {
					break
				}
			}
			if asJSON {
				b, err := json.Marshal(struct {
					Executions []json.RawMessage `json:"executions"`
					Next       string            `json:"next,omitempty"`
				}{append([]json.RawMessage{}, rows...), next})
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), b)
			}
			if err := printExecutions(cmd.OutOrStdout(), rows); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --cursor %s (or --all)\n", next)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&status, "status", "", "only executions of this status (queued, running, compensating, retry_scheduled, completed, failed, cancelled)")
	f.StringVar(&workflow, "workflow", "", "only executions of this workflow id")
	f.IntVar(&limit, "limit", api.DefaultListLimit, fmt.Sprintf("rows per page (at most %d)", api.MaxListLimit))
	f.StringVar(&cursor, "cursor", "", "start after the page that printed this cursor")
	f.BoolVar(&all, "all", false, "follow the pages to the last one")
	f.BoolVar(&asJSON, "json", false, "print the rows as JSON, every field")
	return cmd
}

type executionPage struct {
	Executions []json.RawMessage `json:"executions"`
	Next       string            `json:"next"`
}

func listPage(ctx context.Context, c *apiClient, status, workflow string, limit int, cursor string) (executionPage, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if status != "" {
		q.Set("status", status)
	}
	if workflow != "" {
		q.Set("workflow_id", workflow)
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var page executionPage
	err := c.do(ctx, http.MethodGet, "/v1/executions?"+q.Encode(), nil, &page)
	return page, err
}

func printExecutions(out io.Writer, rows []json.RawMessage) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWORKFLOW\tSTATUS\tPRIORITY\tQUEUED AT")
	for _, raw := range rows {
		var e listedExecution
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("decode an execution: %w", err)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", e.ExecutionID, e.WorkflowID, e.Status, e.Priority,
			e.QueuedAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}
