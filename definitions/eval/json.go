package eval

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// normalize converts decoded YAML or JSON into the JSON data encoding/json produces:
// map[string]any, []any, string, float64, bool and nil. It always returns a fresh copy. Values
// of other types go through encoding/json, as they would on the wire. Maps and lists may nest
// at most levels deep.
func normalize(v any, levels int) (any, error) {
	if levels < 0 {
		return nil, errors.New("nested too deep")
	}
	switch x := v.(type) {
	case nil, string, bool:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("number %v is not valid JSON", x)
		}
		return x, nil
	case float32:
		return normalize(float64(x), levels)
	case int:
		return float64(x), nil
	case int8:
		return float64(x), nil
	case int16:
		return float64(x), nil
	case int32:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint:
		return float64(x), nil
	case uint8:
		return float64(x), nil
	case uint16:
		return float64(x), nil
	case uint32:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("number %q: %w", x, err)
		}
		return normalize(f, levels)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			n, err := normalize(e, levels-1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = n
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("object key %v is a %T, not a string", k, k)
			}
			n, err := normalize(e, levels-1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ks, err)
			}
			out[ks] = n
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			n, err := normalize(e, levels-1)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = n
		}
		return out, nil
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	}
	// Anything else (typed maps and slices, structs) takes the encoding/json round trip.
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("value of type %T is not JSON: %w", v, err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("value of type %T is not JSON: %w", v, err)
	}
	return out, nil
}

// deepCopy copies the maps and lists of JSON data so that the result shares nothing mutable
// with v. Values of other types are normalized.
func deepCopy(v any) (any, error) {
	switch x := v.(type) {
	case nil, string, bool, float64:
		return x, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := deepCopy(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := deepCopy(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	return normalize(v, maxDataDepth)
}

// maxDataDepth bounds the nesting of data normalized for schemas and scopes, as encoding/json
// bounds what it decodes.
const maxDataDepth = 10000

// compactJSON renders v as compact JSON without HTML escaping.
func compactJSON(v any) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return string(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), nil
}

// scalarString renders a string, number or boolean for a URL path segment; numbers never use
// an exponent. It reports false for null, objects and lists.
func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", false
		}
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case float32:
		return scalarString(float64(x))
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return "", false
		}
		if !strings.ContainsAny(string(x), ".eE") {
			return string(x), true // an integer, kept exact however long
		}
		return scalarString(f)
	}
	rv := reflect.ValueOf(v)
	switch {
	case rv.CanInt():
		return strconv.FormatInt(rv.Int(), 10), true
	case rv.CanUint():
		return strconv.FormatUint(rv.Uint(), 10), true
	}
	return "", false
}
