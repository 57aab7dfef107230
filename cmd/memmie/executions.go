package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/memmie/memmie/internal/app/engine"
)

func newExecutionsCmd() *cobra.Command {
	var af apiFlags
	cmd := &cobra.Command{
		Use:   "executions",
		Short: "Inspect and act on executions",
		Long: `Inspects and acts on the executions of a running memmie, through its HTTP API:

  list         lists them, newest first (--status, --workflow, --limit, --all, --json)
  show ID      prints the execution's state as JSON
  history ID   prints its events from the stream, one CloudEvents JSON per line
  cancel ID    asks to cancel it: what succeeded is compensated, then it ends cancelled
  retry ID     asks to re-run a failed execution from its failed step

cancel and retry return once the request is queued; follow the execution with show.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	addAPIFlags(cmd.PersistentFlags(), &af)
	client := func() (*apiClient, error) { return newAPIClient(af) }

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Print an execution's state as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			state, err := callAPI(cmd, client, http.MethodGet, executionPath(args[0], ""))
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), state)
		},
	}

	var pageSize int
	history := &cobra.Command{
		Use:   "history ID",
		Short: "Print an execution's events, one JSON per line",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			if pageSize < 1 || pageSize > engine.MaxHistoryPage {
				return fmt.Errorf("--page-size %d: want 1 to %d", pageSize, engine.MaxHistoryPage)
			}
			out := cmd.OutOrStdout()
			// Page after page, each printed as it comes: a long history is never held whole.
			for after := ""; ; {
				q := url.Values{"limit": {strconv.Itoa(pageSize)}}
				if after != "" {
					q.Set("after", after)
				}
				var page struct {
					Events []json.RawMessage `json:"events"`
					Next   string            `json:"next"`
				}
				if err := c.do(cmd.Context(), http.MethodGet, executionPath(args[0], "/events?"+q.Encode()), nil, &page); err != nil {
					return err
				}
				for _, ev := range page.Events {
					if _, err := fmt.Fprintf(out, "%s\n", ev); err != nil {
						return err
					}
				}
				if page.Next == "" {
					return nil
				}
				after = page.Next
			}
		},
	}
	history.Flags().IntVar(&pageSize, "page-size", engine.MaxHistoryPage, "events per request to the API")

	var reason string
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel an execution, compensating what succeeded",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			body, err := json.Marshal(map[string]string{"reason": reason})
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodPost, executionPath(args[0], "/cancel"), body, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cancel of %s requested\n", args[0])
			return nil
		},
	}
	cancel.Flags().StringVar(&reason, "reason", "", "why, recorded in the execution")

	retry := &cobra.Command{
		Use:   "retry ID",
		Short: "Retry a failed execution from its failed step",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodPost, executionPath(args[0], "/retry"), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "retry of %s requested\n", args[0])
			return nil
		},
	}

	cmd.AddCommand(newExecutionsListCmd(client), show, history, cancel, retry)
	return cmd
}

// callAPI sends method path, without a body, to the API of client and returns its answer.
func callAPI(cmd *cobra.Command, client func() (*apiClient, error), method, path string) (json.RawMessage, error) {
	c, err := client()
	if err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if err := c.do(cmd.Context(), method, path, nil, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

func executionPath(id, tail string) string { return "/v1/executions/" + url.PathEscape(id) + tail }
