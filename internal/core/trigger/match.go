package trigger

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

// DefaultMaxDerivationDepth is Config.MaxDerivationDepth's default.
const DefaultMaxDerivationDepth = 3

// Config sets how blob events are matched.
type Config struct {
	// MaxDerivationDepth bounds chains of derived blobs: the created event of a blob derived
	// more often than this from a client's blob is recorded and starts nothing, which ends a
	// loop of workflows that derive blobs from their own. Defaults to
	// DefaultMaxDerivationDepth (3): a client's blob and three generations below it trigger.
	MaxDerivationDepth int
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.MaxDerivationDepth < 0:
		return c, fmt.Errorf("trigger config: MaxDerivationDepth %d: want >= 0 (0 means the default, %d)", c.MaxDerivationDepth, DefaultMaxDerivationDepth)
	case c.MaxDerivationDepth == 0:
		c.MaxDerivationDepth = DefaultMaxDerivationDepth
	}
	return c, nil
}

// PastBound reports whether the event is the created event of a blob derived deeper than the
// bound: it is recorded like any other, and starts nothing.
func (c Config) PastBound(ev blob.Event) bool {
	c, err := c.withDefaults()
	return err == nil && ev.Data.DerivedFrom != nil && ev.Data.DerivedFrom.Depth > c.MaxDerivationDepth
}

// Start is an execution a blob event starts: the shell queues it (events.ExecutionQueued)
// with these fields, pinning the workflow's current revision.
type Start struct {
	// ExecutionID is deterministic (see ExecutionID), so that no event starts a workflow twice.
	ExecutionID string
	ProviderID  string
	WorkflowID  string
	Priority    int
	// Trigger names the trigger that matched, as workflows[0].triggers[1] of the provider.
	Trigger string
	BlobID  string
	// BaseVersion is the blob version the input's blob is at.
	BaseVersion   int64
	SourceEventID string
	// Input is the event data plus blob, the blob's state after the event.
	Input map[string]any
}

// ExecutionID is the id of the execution a blob event starts for a provider's workflow.
func ExecutionID(blobID, eventID, providerID, workflowID string) string {
	return events.ID(blobID+"/"+eventID, "trigger/"+providerID+"/"+workflowID)
}

// Match returns the executions a blob event starts, given the registered providers and the
// blob after the event (after.Version is the event's delta). Every binding of every provider
// the event considers (its provider_ids, or all when absent) starts one execution when one of
// its triggers matches: the event's kind (onCreate, onUpdate, onDelete) and all conditions.
// Conditions read the event data, where metadata and content are the blob's after the event
// (so metadata.type holds on an update that only changed the status), and blob, the state
// after the event. The result is ordered by priority, highest first, then provider and
// workflow id; it does not depend on the order of providers. Match is pure.
//
// The shell passes the providers that are active, and skips a start whose workflow is not
// registered or not active.
func Match(providers []*definitions.Provider, ev blob.Event, after blob.State, cfg Config) ([]Start, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	switch {
	case !after.Exists():
		return nil, fmt.Errorf("match blob event %s: blob %q does not exist", ev.ID, ev.Data.BlobID)
	case after.BlobID != ev.Data.BlobID:
		return nil, fmt.Errorf("match blob event %s: the state is of blob %q, the event of %q", ev.ID, after.BlobID, ev.Data.BlobID)
	case cfg.PastBound(ev):
		return nil, nil
	}
	event, ok := definitions.TriggerEvent(string(ev.Kind()))
	if !ok {
		return nil, fmt.Errorf("match blob event %s: unknown kind %q", ev.ID, ev.Kind())
	}
	raw, data, err := inputs(ev, after)
	if err != nil {
		return nil, fmt.Errorf("match blob event %s: %w", ev.ID, err)
	}
	var starts []Start
	for _, p := range providers {
		if ev.Data.ProviderIDs != nil && !slices.Contains(ev.Data.ProviderIDs, p.Provider.ID) {
			continue
		}
		for i := range p.Workflows {
			b := &p.Workflows[i]
			for j := range b.Triggers {
				if !b.Triggers[j].Matches(event, data) {
					continue
				}
				var input map[string]any
				if err := json.Unmarshal(raw, &input); err != nil {
					return nil, fmt.Errorf("match blob event %s: %w", ev.ID, err)
				}
				starts = append(starts, Start{
					ExecutionID:   ExecutionID(ev.Data.BlobID, ev.ID, p.Provider.ID, b.WorkflowID),
					ProviderID:    p.Provider.ID,
					WorkflowID:    b.WorkflowID,
					Priority:      b.Priority,
					Trigger:       "workflows[" + strconv.Itoa(i) + "].triggers[" + strconv.Itoa(j) + "]",
					BlobID:        ev.Data.BlobID,
					BaseVersion:   after.Version,
					SourceEventID: ev.ID,
					Input:         input,
				})
				break // one execution per workflow: the first trigger that matches names it
			}
		}
	}
	slices.SortStableFunc(starts, func(a, b Start) int {
		switch {
		case a.Priority != b.Priority:
			return b.Priority - a.Priority
		case a.ProviderID != b.ProviderID:
			return cmpString(a.ProviderID, b.ProviderID)
		}
		return cmpString(a.WorkflowID, b.WorkflowID)
	})
	// Two providers with one id would start one execution twice; a valid set has none.
	seen := make(map[string]bool, len(starts))
	for _, s := range starts {
		if seen[s.ExecutionID] {
			return nil, fmt.Errorf("match blob event %s: provider %s binds workflow %s twice", ev.ID, s.ProviderID, s.WorkflowID)
		}
		seen[s.ExecutionID] = true
	}
	return starts, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// inputs returns the workflow input (the event data plus blob), encoded, and what conditions
// read (the same, with metadata and content taken from the blob), decoded as plain JSON, as
// the execution reads its input from its queued event. provider_ids is left out when the event
// has none, since the input schema wants a list.
func inputs(ev blob.Event, after blob.State) (json.RawMessage, map[string]any, error) {
	raw, err := json.Marshal(&ev.Data)
	if err != nil {
		return nil, nil, err
	}
	var input map[string]any
	if err := json.Unmarshal(raw, &input); err != nil {
		return nil, nil, err
	}
	if ev.Data.ProviderIDs == nil {
		delete(input, "provider_ids")
	}
	snap := after.Snapshot()
	raw, err = json.Marshal(snap)
	if err != nil {
		return nil, nil, err
	}
	var view map[string]any
	if err := json.Unmarshal(raw, &view); err != nil {
		return nil, nil, err
	}
	input["blob"] = view
	if raw, err = json.Marshal(input); err != nil {
		return nil, nil, err
	}
	data := make(map[string]any, len(input))
	for k, v := range input {
		data[k] = v
	}
	data["content"], data["metadata"] = view["content"], view["metadata"]
	return raw, data, nil
}
