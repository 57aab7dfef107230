package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/memmie/memmie/definitions"
)

// Exit codes of `memmie run --wait`.
const (
	exitCompleted = 0
	exitFailed    = 1
	exitCancelled = 2
	exitTimeout   = 3
)

// Waiting of `run --wait`: each request asks the API to answer when the execution ends or
// waitStep runs out (GET /v1/executions/{id}?wait=), then asks again at once.
const (
	// waitStep stays under apiRequestTimeout, which bounds each request.
	waitStep = 20 * time.Second
	// After a failed request, the next one waits from waitRetryMin, growing by half each time,
	// up to waitRetryMax. So does each request to an API that does not wait (an older one,
	// which sends no Memmie-Ended header, or one without JetStream, which answers ?wait with
	// 501): then run polls.
	waitRetryMin = 50 * time.Millisecond
	waitRetryMax = time.Second
	// waitMaxFailures consecutive failed requests (network errors, 5xx) end the wait.
	waitMaxFailures = 10
)

type runOptions struct {
	api            apiFlags
	input          string
	priority       int
	idempotencyKey string
	maxRetries     int
	wait           bool
	timeout        time.Duration
}

func newRunCmd() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run WORKFLOW_ID [--input JSON|@file] [--priority N] [--idempotency-key K] [--wait] [--timeout D]",
		Short: "Start an execution and print its id",
		Long: `Starts an execution of a registered workflow and prints its id.

--input is the execution's input: JSON, or @file to read it from a file (@- reads stdin).
Without it the input is null.

With --wait, run waits for the execution to end and prints its final state as JSON on
stdout (the id then goes to stderr, so that stdout is only the JSON). It exits 0 when the
execution completed, 1 when it failed, 2 when it was cancelled and 3 when --timeout ran out
first (the execution goes on; its last known state is printed). It waits without polling:
each request to the API (GET /v1/executions/{id}?wait=20s) is answered when the execution
ends, or after 20 s, and then asked again. A dropped connection or an API restarting is
tried again, growing from 50 ms to 1 s between tries; 10 failures in a row end the wait.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.timeout < 0 {
				return fmt.Errorf("--timeout %s: want a positive duration", o.timeout)
			}
			c, err := newAPIClient(o.api)
			if err != nil {
				return err
			}
			return runWorkflow(cmd.Context(), c, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], o)
		},
	}
	f := cmd.Flags()
	addAPIFlags(f, &o.api)
	f.StringVar(&o.input, "input", "", "the input as JSON, or @file")
	f.IntVar(&o.priority, "priority", 0, fmt.Sprintf("priority, %d to %d; higher runs first", definitions.MinPriority, definitions.MaxPriority))
	f.StringVar(&o.idempotencyKey, "idempotency-key", "", "the same key always gives the same execution")
	f.IntVar(&o.maxRetries, "max-retries", 0, "automatic re-runs of a retryable failure")
	f.BoolVar(&o.wait, "wait", false, "wait for the end and print the final state as JSON")
	f.DurationVar(&o.timeout, "timeout", 0, "with --wait, stop waiting after this long and exit 3 (0: no limit; ignored without --wait)")
	return cmd
}

func runWorkflow(ctx context.Context, c *apiClient, stdin io.Reader, stdout, stderr io.Writer, workflowID string, o runOptions) error {
	input, err := readInput(o.input, stdin)
	if err != nil {
		return err
	}
	if o.priority < definitions.MinPriority || o.priority > definitions.MaxPriority {
		return fmt.Errorf("--priority %d: want %d to %d", o.priority, definitions.MinPriority, definitions.MaxPriority)
	}
	body, err := json.Marshal(struct {
		WorkflowID     string          `json:"workflow_id"`
		Input          json.RawMessage `json:"input,omitempty"`
		Priority       int             `json:"priority,omitempty"`
		IdempotencyKey string          `json:"idempotency_key,omitempty"`
		MaxRetries     int             `json:"max_retries,omitempty"`
	}{workflowID, input, o.priority, o.idempotencyKey, o.maxRetries})
	if err != nil {
		return err
	}
	var started struct {
		ExecutionID string `json:"execution_id"`
	}
	if err := c.do(ctx, http.MethodPost, "/v1/executions", body, &started); err != nil {
		return fmt.Errorf("start %s: %w", workflowID, err)
	}
	if !o.wait {
		fmt.Fprintln(stdout, started.ExecutionID)
		return nil
	}
	fmt.Fprintln(stderr, started.ExecutionID)
	return waitForEnd(ctx, c, stdout, started.ExecutionID, o.timeout)
}

// readInput returns the --input value as JSON: literal, @file or @- (stdin). Empty means none.
func readInput(v string, stdin io.Reader) (json.RawMessage, error) {
	return readJSONFlag("--input", v, stdin, definitions.MaxFileSize)
}

// readJSONFlag returns the JSON value of flag: literal, @file or @- (stdin, read up to limit+1
// bytes). Empty means none.
func readJSONFlag(flag, v string, stdin io.Reader, limit int64) ([]byte, error) {
	if v == "" {
		return nil, nil
	}
	data := []byte(v)
	if name, ok := strings.CutPrefix(v, "@"); ok {
		var err error
		if name == "-" {
			data, err = io.ReadAll(io.LimitReader(stdin, limit+1))
		} else {
			data, err = os.ReadFile(name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("%s %q: not JSON", flag, abbreviate(v))
	}
	return data, nil
}

func abbreviate(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// waitForEnd waits for the execution to end, a long poll of the API at a time, prints its
// state and returns the exit code of its status.
func waitForEnd(ctx context.Context, c *apiClient, stdout io.Writer, id string, timeout time.Duration) error {
	waitCtx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var (
		last     json.RawMessage
		failures int
		interval = waitRetryMin
		// polling: the API does not follow executions (501); GET without ?wait.
		polling bool
	)
	for {
		path := "/v1/executions/" + url.PathEscape(id)
		if !polling {
			step := waitStep
			if deadline, ok := waitCtx.Deadline(); ok {
				step = max(min(step, time.Until(deadline)), 0)
			}
			path += "?wait=" + step.String()
		}
		var state json.RawMessage
		hdr, err := c.doHeader(waitCtx, http.MethodGet, path, nil, &state)
		var apiErr *apiError
		switch {
		case err == nil:
			failures = 0
			last = state
			var s struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal(state, &s); err != nil {
				return fmt.Errorf("execution %s: %w", id, err)
			}
			if code, ended := exitCodeOf(s.Status); ended {
				if err := printJSON(stdout, state); err != nil {
					return err
				}
				if code == exitCompleted {
					return nil
				}
				return &exitError{code: code, msg: fmt.Sprintf("execution %s %s", id, s.Status)}
			}
			if hdr.Get("Memmie-Ended") != "" {
				// The API waited the step out: wait again.
				interval = waitRetryMin
				continue
			}
		case waitCtx.Err() != nil:
			// The timeout or Ctrl-C, below.
		case !polling && errors.As(err, &apiErr) && apiErr.Status == http.StatusNotImplemented:
			polling = true
			continue
		case transient(err):
			if failures++; failures >= waitMaxFailures {
				return fmt.Errorf("wait for %s: %d failed requests in a row: %w", id, failures, err)
			}
		default:
			return fmt.Errorf("wait for %s: %w", id, err)
		}

		select {
		case <-time.After(interval):
			interval = min(interval*3/2, waitRetryMax)
		case <-waitCtx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Print the state as it is now; the last answer's when it cannot be read.
			finalCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var now json.RawMessage
			if err := c.do(finalCtx, http.MethodGet, "/v1/executions/"+url.PathEscape(id), nil, &now); err == nil {
				last = now
			}
			cancel()
			if last != nil {
				if err := printJSON(stdout, last); err != nil {
					return err
				}
			}
			return &exitError{code: exitTimeout, msg: fmt.Sprintf("execution %s did not end within %s", id, timeout)}
		}
	}
}

// exitCodeOf maps an ended execution's status to run's exit code.
func exitCodeOf(status string) (code int, ended bool) {
	switch status {
	case "completed":
		return exitCompleted, true
	case "failed":
		return exitFailed, true
	case "cancelled":
		return exitCancelled, true
	}
	return 0, false
}

// transient reports whether a poll may succeed when tried again: the server is restarting or
// briefly unreachable.
func transient(err error) bool {
	var apiErr *apiError
	if errors.As(err, &apiErr) {
		return apiErr.Status >= 500
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF)
}

// printJSON prints JSON indented, with a final newline. It keeps numbers as they are.
func printJSON(w io.Writer, data json.RawMessage) error {
	var b bytes.Buffer
	if err := json.Indent(&b, data, "", "  "); err != nil {
		return err
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}
