package definitions

import "gopkg.in/yaml.v3"

// The decoders below turn a document's nodes into a definition, strictly: every unknown field
// and every value of the wrong type is a problem. Whether required fields are present, and
// whether values make sense, is checked afterwards on the typed value (check.go), so that the
// same checks run on definitions decoded from JSON by encoding/json.

func (d *decoder) workflow(n *yaml.Node) *Workflow {
	w := &Workflow{}
	if n = d.enter(n, "", 0); n == nil {
		return w
	}
	f := d.fields(n, "", "id", "provider_id", "name", "description", "input_schema_id",
		"output_schema_id", "active", "timeout_seconds", "steps", "output_map")
	if v := f["id"]; v != nil {
		w.ID = d.str(v, "id", 1)
	}
	if v := f["provider_id"]; v != nil {
		w.ProviderID = d.str(v, "provider_id", 1)
	}
	if v := f["name"]; v != nil {
		w.Name = d.str(v, "name", 1)
	}
	if v := f["description"]; v != nil {
		w.Description = d.str(v, "description", 1)
	}
	if v := f["input_schema_id"]; v != nil {
		w.InputSchemaID = d.str(v, "input_schema_id", 1)
	}
	if v := f["output_schema_id"]; v != nil {
		w.OutputSchemaID = d.str(v, "output_schema_id", 1)
	}
	if v := f["active"]; v != nil {
		b := d.boolean(v, "active", 1)
		w.Active = &b
	}
	if v := f["timeout_seconds"]; v != nil {
		w.TimeoutSeconds = d.integer(v, "timeout_seconds", 1)
	}
	if v := f["steps"]; v != nil {
		d.list(v, "steps", 1, func(item *yaml.Node, path string) {
			w.Steps = append(w.Steps, d.step(item, path, 2))
		})
	}
	if v := f["output_map"]; v != nil {
		w.OutputMap = d.object(v, "output_map", 1)
	}
	return w
}

func (d *decoder) step(n *yaml.Node, path string, depth int) Step {
	var s Step
	if n = d.enter(n, path, depth); n == nil {
		return s
	}
	f := d.fields(n, path, "id", "name", "type", "service", "endpoint", "method", "input_map",
		"output_map", "condition", "variables", "timeout_seconds", "compensation", "retry",
		"on_failure")
	depth++
	if v := f["id"]; v != nil {
		s.ID = d.str(v, join(path, "id"), depth)
	}
	if v := f["name"]; v != nil {
		s.Name = d.str(v, join(path, "name"), depth)
	}
	if v := f["type"]; v != nil {
		s.Type = StepType(d.str(v, join(path, "type"), depth))
	}
	if v := f["service"]; v != nil {
		s.Service = d.str(v, join(path, "service"), depth)
	}
	if v := f["endpoint"]; v != nil {
		s.Endpoint = d.str(v, join(path, "endpoint"), depth)
	}
	if v := f["method"]; v != nil {
		s.Method = d.str(v, join(path, "method"), depth)
	}
	if v := f["input_map"]; v != nil {
		s.InputMap = d.object(v, join(path, "input_map"), depth)
	}
	if v := f["output_map"]; v != nil {
		s.OutputMap = d.object(v, join(path, "output_map"), depth)
	}
	if v := f["condition"]; v != nil {
		s.Condition = d.str(v, join(path, "condition"), depth)
	}
	if v := f["variables"]; v != nil {
		s.Variables = d.strings(v, join(path, "variables"), depth)
	}
	if v := f["timeout_seconds"]; v != nil {
		s.TimeoutSeconds = d.integer(v, join(path, "timeout_seconds"), depth)
	}
	if v := f["compensation"]; v != nil {
		s.Compensation = d.compensation(v, join(path, "compensation"), depth)
	}
	if v := f["retry"]; v != nil {
		s.Retry = d.retry(v, join(path, "retry"), depth)
	}
	if v := f["on_failure"]; v != nil {
		s.OnFailure = OnFailure(d.str(v, join(path, "on_failure"), depth))
	}
	return s
}

func (d *decoder) compensation(n *yaml.Node, path string, depth int) *Compensation {
	c := &Compensation{}
	if n = d.enter(n, path, depth); n == nil {
		return c
	}
	f := d.fields(n, path, "service", "endpoint", "method", "input_map")
	depth++
	if v := f["service"]; v != nil {
		c.Service = d.str(v, join(path, "service"), depth)
	}
	if v := f["endpoint"]; v != nil {
		c.Endpoint = d.str(v, join(path, "endpoint"), depth)
	}
	if v := f["method"]; v != nil {
		c.Method = d.str(v, join(path, "method"), depth)
	}
	if v := f["input_map"]; v != nil {
		c.InputMap = d.object(v, join(path, "input_map"), depth)
	}
	return c
}

func (d *decoder) retry(n *yaml.Node, path string, depth int) *RetryPolicy {
	r := &RetryPolicy{}
	if n = d.enter(n, path, depth); n == nil {
		return r
	}
	f := d.fields(n, path, "max_attempts", "backoff_ms", "max_backoff_ms", "multiplier", "jitter")
	depth++
	if v := f["max_attempts"]; v != nil {
		r.MaxAttempts = d.integer(v, join(path, "max_attempts"), depth)
	}
	if v := f["backoff_ms"]; v != nil {
		r.BackoffMS = d.integer(v, join(path, "backoff_ms"), depth)
	}
	if v := f["max_backoff_ms"]; v != nil {
		r.MaxBackoffMS = d.integer(v, join(path, "max_backoff_ms"), depth)
	}
	if v := f["multiplier"]; v != nil {
		r.Multiplier = d.float(v, join(path, "multiplier"), depth)
	}
	if v := f["jitter"]; v != nil {
		j := d.float(v, join(path, "jitter"), depth)
		r.Jitter = &j
	}
	return r
}

func (d *decoder) schema(n *yaml.Node) *Schema {
	s := &Schema{}
	if n = d.enter(n, "", 0); n == nil {
		return s
	}
	f := d.fields(n, "", "id", "provider_id", "name", "version", "type", "description", "definition")
	if v := f["id"]; v != nil {
		s.ID = d.str(v, "id", 1)
	}
	if v := f["provider_id"]; v != nil {
		s.ProviderID = d.str(v, "provider_id", 1)
	}
	if v := f["name"]; v != nil {
		s.Name = d.str(v, "name", 1)
	}
	if v := f["version"]; v != nil {
		s.Version = d.str(v, "version", 1)
	}
	if v := f["type"]; v != nil {
		s.Type = d.str(v, "type", 1)
	}
	if v := f["description"]; v != nil {
		s.Description = d.str(v, "description", 1)
	}
	if v := f["definition"]; v != nil {
		s.Definition = d.value(v, "definition", 1)
	}
	return s
}

func (d *decoder) provider(n *yaml.Node) *Provider {
	p := &Provider{}
	if n = d.enter(n, "", 0); n == nil {
		return p
	}
	f := d.fields(n, "", "provider", "workflows")
	if v := f["provider"]; v != nil {
		if v = d.enter(v, "provider", 1); v != nil {
			pf := d.fields(v, "provider", "id", "name", "type")
			if x := pf["id"]; x != nil {
				p.Provider.ID = d.str(x, "provider.id", 2)
			}
			if x := pf["name"]; x != nil {
				p.Provider.Name = d.str(x, "provider.name", 2)
			}
			if x := pf["type"]; x != nil {
				p.Provider.Type = d.str(x, "provider.type", 2)
			}
		}
	}
	if v := f["workflows"]; v != nil {
		p.Workflows = []ProviderBinding{}
		d.list(v, "workflows", 1, func(item *yaml.Node, path string) {
			p.Workflows = append(p.Workflows, d.binding(item, path, 2))
		})
	}
	return p
}

func (d *decoder) binding(n *yaml.Node, path string, depth int) ProviderBinding {
	var b ProviderBinding
	if n = d.enter(n, path, depth); n == nil {
		return b
	}
	f := d.fields(n, path, "workflow_id", "priority", "triggers")
	depth++
	if v := f["workflow_id"]; v != nil {
		b.WorkflowID = d.str(v, join(path, "workflow_id"), depth)
	}
	if v := f["priority"]; v != nil {
		b.Priority = d.integer(v, join(path, "priority"), depth)
	}
	if v := f["triggers"]; v != nil {
		b.Triggers = []Trigger{}
		d.list(v, join(path, "triggers"), depth, func(item *yaml.Node, path string) {
			b.Triggers = append(b.Triggers, d.trigger(item, path, depth+1))
		})
	}
	return b
}

func (d *decoder) trigger(n *yaml.Node, path string, depth int) Trigger {
	var t Trigger
	if n = d.enter(n, path, depth); n == nil {
		return t
	}
	f := d.fields(n, path, "event", "conditions")
	depth++
	if v := f["event"]; v != nil {
		t.Event = d.str(v, join(path, "event"), depth)
	}
	if v := f["conditions"]; v != nil {
		d.list(v, join(path, "conditions"), depth, func(item *yaml.Node, path string) {
			t.Conditions = append(t.Conditions, d.condition(item, path, depth+1))
		})
	}
	return t
}

func (d *decoder) condition(n *yaml.Node, path string, depth int) TriggerCondition {
	var c TriggerCondition
	if n = d.enter(n, path, depth); n == nil {
		return c
	}
	f := d.fields(n, path, "field", "operator", "value")
	depth++
	if v := f["field"]; v != nil {
		c.Field = d.str(v, join(path, "field"), depth)
	}
	if v := f["operator"]; v != nil {
		c.Operator = d.str(v, join(path, "operator"), depth)
	}
	if v := f["value"]; v != nil {
		c.Value = d.value(v, join(path, "value"), depth)
	}
	return c
}
