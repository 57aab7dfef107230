package definitions

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Trigger events: the blob events a provider's workflow can react to.
const (
	EventOnCreate = "onCreate"
	EventOnUpdate = "onUpdate"
	EventOnDelete = "onDelete"
)

var triggerEvents = []string{EventOnCreate, EventOnUpdate, EventOnDelete}

// TriggerEvent returns the trigger event of a blob event's action, the last token of its
// subject: created -> onCreate, updated -> onUpdate, deleted -> onDelete.
func TriggerEvent(action string) (string, bool) {
	switch action {
	case "created":
		return EventOnCreate, true
	case "updated":
		return EventOnUpdate, true
	case "deleted":
		return EventOnDelete, true
	}
	return "", false
}

// Operators of trigger conditions.
const (
	OpEq       = "eq"       // equal, numbers compared by value (1 eq 1.0)
	OpNe       = "ne"       // not eq; true when the field is missing
	OpGt       = "gt"       // greater than: numbers, or strings in byte order
	OpGte      = "gte"      // greater than or equal
	OpLt       = "lt"       // less than
	OpLte      = "lte"      // less than or equal
	OpIn       = "in"       // equal to an item of the value, a list
	OpNotIn    = "not_in"   // not in; true when the field is missing
	OpContains = "contains" // a string field holds the value as a substring, or a list field holds an item equal to it
	OpExists   = "exists"   // the field is present and not null (value true, the default), or is not (value false)
	OpMatches  = "matches"  // a string field matches the value, a regular expression (RE2, unanchored)
)

var operators = []string{OpEq, OpNe, OpGt, OpGte, OpLt, OpLte, OpIn, OpNotIn, OpContains, OpExists, OpMatches}

// Matches reports whether any of the binding's triggers matches the blob event. event is a
// trigger event (onCreate) or a blob action (created); data is the blob event data.
func (b *ProviderBinding) Matches(event string, data map[string]any) bool {
	for i := range b.Triggers {
		if b.Triggers[i].Matches(event, data) {
			return true
		}
	}
	return false
}

// Matches reports whether the trigger is for the event and every condition holds on data.
// event is a trigger event (onCreate) or a blob action (created). A trigger with no
// conditions matches every event of its kind.
func (t *Trigger) Matches(event string, data map[string]any) bool {
	if e, ok := TriggerEvent(event); ok {
		event = e
	}
	if t.Event != event {
		return false
	}
	for i := range t.Conditions {
		if !t.Conditions[i].Holds(data) {
			return false
		}
	}
	return true
}

// Holds reports whether the condition holds on the blob event data. A condition that is not
// valid (see the loader's checks) never holds, so that a broken definition matches nothing.
func (c *TriggerCondition) Holds(data map[string]any) bool {
	if c.check() != nil {
		return false
	}
	v, found := lookup(data, c.Field)
	if found && v == nil {
		found = false
	}
	switch c.Operator {
	case OpExists:
		want, ok := c.Value.(bool)
		if !ok {
			want = true
		}
		return found == want
	case OpEq:
		return found && equal(v, c.Value)
	case OpNe:
		return !found || !equal(v, c.Value)
	case OpIn, OpNotIn:
		in := false
		if found {
			for _, item := range c.Value.([]any) {
				if equal(v, item) {
					in = true
					break
				}
			}
		}
		return in == (c.Operator == OpIn)
	case OpGt, OpGte, OpLt, OpLte:
		cmp, ok := compare(v, c.Value)
		if !found || !ok {
			return false
		}
		switch c.Operator {
		case OpGt:
			return cmp > 0
		case OpGte:
			return cmp >= 0
		case OpLt:
			return cmp < 0
		}
		return cmp <= 0
	case OpContains:
		switch v := v.(type) {
		case string:
			s, ok := c.Value.(string)
			return ok && strings.Contains(v, s)
		case []any:
			for _, item := range v {
				if equal(item, c.Value) {
					return true
				}
			}
		}
		return false
	case OpMatches:
		s, ok := v.(string)
		if !ok {
			return false
		}
		re, err := compileRegexp(c.Value.(string))
		return err == nil && re.MatchString(s)
	}
	return false
}

// lookup follows a dotted path into JSON data. A segment that is a whole number indexes a list.
func lookup(data map[string]any, path string) (any, bool) {
	var cur any = data
	for _, seg := range strings.Split(path, ".") {
		switch node := cur.(type) {
		case map[string]any:
			v, ok := node[seg]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(node) {
				return nil, false
			}
			cur = node[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// equal compares JSON values, numbers by value whatever their Go type.
func equal(a, b any) bool {
	if x, ok := toNumber(a); ok {
		y, ok := toNumber(b)
		return ok && x == y
	}
	switch a := a.(type) {
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equal(a[i], b[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, av := range a {
			bv, ok := b[k]
			if !ok || !equal(av, bv) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// compare orders two numbers, or two strings; ok is false for any other pair.
func compare(a, b any) (int, bool) {
	if x, ok := toNumber(a); ok {
		y, ok := toNumber(b)
		if !ok {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	}
	x, ok1 := a.(string)
	y, ok2 := b.(string)
	if !ok1 || !ok2 {
		return 0, false
	}
	return strings.Compare(x, y), true
}

// toNumber reads the numbers JSON data may hold: float64 from encoding/json, json.Number
// with UseNumber, and Go integers from hand-built data.
func toNumber(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint64:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// regexps caches the compiled patterns of matches conditions. They come from registered
// definitions, so there are few; the cap only guards against a flood of new ones.
var regexps = struct {
	sync.Mutex
	m map[string]*regexp.Regexp
}{m: map[string]*regexp.Regexp{}}

const maxCachedRegexps = 1024

func compileRegexp(pattern string) (*regexp.Regexp, error) {
	regexps.Lock()
	re, ok := regexps.m[pattern]
	regexps.Unlock()
	if ok {
		return re, nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, err
	}
	regexps.Lock()
	if len(regexps.m) < maxCachedRegexps {
		regexps.m[pattern] = re
	}
	regexps.Unlock()
	return re, nil
}
