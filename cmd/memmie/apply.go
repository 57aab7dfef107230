package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/memmie/memmie/definitions"
)

// defaultAPIURL is where a local `memmie dev` serves its API.
const defaultAPIURL = "http://127.0.0.1:8080"

func newApplyCmd() *cobra.Command {
	var af apiFlags
	cmd := &cobra.Command{
		Use:   "apply PATH...",
		Short: "Register definitions with a running memmie",
		Long: `Registers schemas, workflows and providers with a running memmie, through its HTTP API.
The files below each PATH are read as by validate, and checked as one set together with
the definitions the server has registered (a workflow may name a schema registered
earlier). An invalid set registers nothing: every problem is printed, as by validate, and
apply exits 1. Then schemas, then workflows, then providers are registered, one PUT each,
and one line is printed per definition:

  workflow blob_summary revision 2 changed

A definition whose canonical JSON is unchanged is a no-op ("unchanged"); a changed one
becomes a new revision.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			c, err := newAPIClient(af)
			if err != nil {
				return err
			}
			return apply(cmd.Context(), c, cmd.OutOrStdout(), paths)
		},
	}
	addAPIFlags(cmd.Flags(), &af)
	return cmd
}

func apply(ctx context.Context, c *apiClient, out io.Writer, paths []string) error {
	set, err := definitions.Load(paths...)
	var probs definitions.Problems
	if err != nil && !errors.As(err, &probs) {
		return err
	}
	if len(probs) > 0 {
		// The set may name definitions the server holds: check it again with them.
		if probs, err = checkWithServer(ctx, c, set, probs); err != nil {
			return err
		}
	}
	if len(probs) > 0 {
		return printProblems(out, probs)
	}

	defs := setDefinitions(set)
	for i, def := range defs {
		body, err := definitions.Canonical(def)
		if err != nil {
			return err
		}
		var res struct {
			Revision int  `json:"revision"`
			Changed  bool `json:"changed"`
		}
		path := "/v1/" + string(def.Kind()) + "s/" + url.PathEscape(def.DefinitionID())
		if err := c.do(ctx, http.MethodPut, path, body, &res); err != nil {
			var apiErr *apiError
			if errors.As(err, &apiErr) && len(apiErr.Problems) > 0 {
				fmt.Fprintf(out, "%s %s: refused by the server; %d of %d definitions registered before it\n",
					def.Kind(), def.DefinitionID(), i, len(defs))
				return printProblems(out, apiErr.Problems)
			}
			return fmt.Errorf("register %s %s (%d of %d registered before it): %w", def.Kind(), def.DefinitionID(), i, len(defs), err)
		}
		changed := "unchanged"
		if res.Changed {
			changed = "changed"
		}
		fmt.Fprintf(out, "%s %s revision %d %s\n", def.Kind(), def.DefinitionID(), res.Revision, changed)
	}
	return nil
}

// setDefinitions returns the definitions of a set in the order of registration: schemas, then
// workflows, then providers, each kind by id (the registry's own order).
func setDefinitions(set *definitions.Set) []definitions.Definition {
	var defs []definitions.Definition
	for _, kind := range [][]definitions.Definition{
		asDefinitions(set.Schemas), asDefinitions(set.Workflows), asDefinitions(set.Providers),
	} {
		slices.SortStableFunc(kind, func(a, b definitions.Definition) int { return cmp.Compare(a.DefinitionID(), b.DefinitionID()) })
		defs = append(defs, kind...)
	}
	return defs
}

func asDefinitions[T definitions.Definition](xs []T) []definitions.Definition {
	out := make([]definitions.Definition, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// checkWithServer separates the problems of single files, which stand, from those of the set,
// and checks the set again with the active schemas and workflows of the server added, for
// the references the files do not satisfy themselves. It returns the problems that remain.
func checkWithServer(ctx context.Context, c *apiClient, set *definitions.Set, probs definitions.Problems) (definitions.Problems, error) {
	var local definitions.Problems
	if err := set.Validate(); err != nil && !errors.As(err, &local) {
		return nil, err
	}
	setProblem := map[string]int{}
	for _, p := range local {
		setProblem[p.String()]++
	}
	var fileProbs definitions.Problems
	for _, p := range probs {
		if setProblem[p.String()] > 0 {
			setProblem[p.String()]--
			continue
		}
		fileProbs = append(fileProbs, p)
	}
	if len(local) == 0 {
		return fileProbs, nil
	}

	// A copy of the set (it keeps the files' lines) grows stubs of the server's definitions.
	aug := *set
	aug.Schemas, aug.Workflows = slices.Clone(set.Schemas), slices.Clone(set.Workflows)

	for _, kind := range []definitions.Kind{definitions.KindSchema, definitions.KindWorkflow} {
		var list struct {
			Items []struct {
				ID         string          `json:"id"`
				Active     bool            `json:"active"`
				Definition json.RawMessage `json:"definition"`
			} `json:"items"`
		}
		if err := c.do(ctx, http.MethodGet, "/v1/"+string(kind)+"s", nil, &list); err != nil {
			return nil, fmt.Errorf("read the registered %ss: %w", kind, err)
		}
		for _, it := range list.Items {
			if !it.Active {
				continue
			}
			switch kind {
			case definitions.KindSchema:
				if set.Schema(it.ID) == nil {
					s := &definitions.Schema{ID: it.ID}
					_ = json.Unmarshal(it.Definition, s) // its type is what matters; the server checked the rest
					aug.Schemas = append(aug.Schemas, s)
				}
			case definitions.KindWorkflow:
				if set.Workflow(it.ID) == nil {
					aug.Workflows = append(aug.Workflows, &definitions.Workflow{ID: it.ID})
				}
			}
		}
	}
	var remaining definitions.Problems
	if err := aug.Validate(); err != nil && !errors.As(err, &remaining) {
		return nil, err
	}
	return append(fileProbs, remaining...), nil
}

func printProblems(out io.Writer, probs definitions.Problems) error {
	for _, p := range probs {
		fmt.Fprintln(out, p.String())
	}
	return &exitError{code: 1}
}

// apiClient talks to a running memmie's HTTP API.
type apiClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

// apiRequestTimeout bounds one request to the API.
const apiRequestTimeout = 30 * time.Second

// apiFlags are the flags of a command that calls the API.
type apiFlags struct {
	url   string
	token string
}

func addAPIFlags(fs *pflag.FlagSet, f *apiFlags) {
	fs.StringVar(&f.url, "api-url", defaultAPIURL, "URL of a running memmie's HTTP API")
	fs.StringVar(&f.token, "api-token", "", "bearer token of the API, when it was started with one; prefer the environment to the command line, which every user of the machine sees (ps)")
}

func newAPIClient(f apiFlags) (*apiClient, error) {
	u, err := url.Parse(f.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--api-url %q: want http(s)://host[:port]", f.url)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &apiClient{base: u, token: f.token, http: &http.Client{Timeout: apiRequestTimeout}}, nil
}

// apiError is an error answer of the API.
type apiError struct {
	Status   int
	Code     string
	Message  string
	Problems definitions.Problems
}

func (e *apiError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
	}
	return e.Code + ": " + e.Message
}

// do sends a request with a JSON body (nil: none) and decodes a 2xx answer into out (nil:
// ignored). Any other answer is an *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	_, err := c.doHeader(ctx, method, path, body, out)
	return err
}

// doHeader is do that also returns the answer's headers (nil when there is no answer).
func (c *apiClient) doHeader(ctx context.Context, method, path string, body []byte, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.Header, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Code     string               `json:"code"`
				Message  string               `json:"message"`
				Problems definitions.Problems `json:"problems"`
			} `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error.Message == "" {
			return resp.Header, &apiError{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
		}
		return resp.Header, &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message, Problems: e.Error.Problems}
	}
	if out == nil {
		return resp.Header, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.Header, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return resp.Header, nil
}
