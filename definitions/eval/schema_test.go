package eval

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const blobInputSchema = `
type: object
required: [blob_id, schema_id]
properties:
  blob_id: {type: string, format: uuid}
  schema_id: {type: string, minLength: 1}
  provider_ids: {type: array, items: {type: string}, maxItems: 3}
  size: {type: integer, minimum: 0, maximum: 100}
  ratio: {type: number, exclusiveMaximum: 1}
  created_at: {type: string, format: date-time}
  owner: {type: string, format: email}
additionalProperties: false
`

func TestSchemaValidate(t *testing.T) {
	const uuid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	tests := []struct {
		name     string
		schema   string // YAML
		value    string // JSON
		problems []string
	}{
		{
			name:   "2020-12 valid",
			schema: blobInputSchema,
			value: `{"blob_id": "` + uuid + `", "schema_id": "s", "provider_ids": ["a"], "size": 100, "ratio": 0.5,
			         "created_at": "2024-01-02T03:04:05Z", "owner": "a@example.com"}`,
		},
		{
			name:   "2020-12 integral float64 is an integer",
			schema: blobInputSchema,
			value:  `{"blob_id": "` + uuid + `", "schema_id": "s", "size": 3.0}`,
		},
		{
			name:   "2020-12 every violation listed",
			schema: blobInputSchema,
			value: `{"blob_id": "x", "provider_ids": ["a", 1, "c", "d"], "size": 2.5, "ratio": 1,
			         "created_at": "yesterday", "owner": "nobody", "extra": true}`,
			problems: []string{
				"/: additional properties 'extra' not allowed",
				"/: missing property 'schema_id'",
				"/blob_id: 'x' is not valid uuid",
				"/created_at: 'yesterday' is not valid date-time",
				"/owner: 'nobody' is not valid email",
				"/provider_ids/1: got number, want string",
				"/provider_ids: maxItems: got 4, want 3",
				"/ratio: exclusiveMaximum: got 1, want 1",
				"/size: got number, want integer",
			},
		},
		{
			name:     "2020-12 wrong root type",
			schema:   blobInputSchema,
			value:    `"text"`,
			problems: []string{"/: got string, want object"},
		},
		{
			name: "draft-07 uuid asserted",
			schema: `
$schema: http://json-schema.org/draft-07/schema#
type: object
properties:
  blob_id: {type: string, format: uuid}
  n: {type: integer, maximum: 10}
`,
			value:    `{"blob_id": "not-a-uuid", "n": 11}`,
			problems: []string{"/blob_id: 'not-a-uuid' is not valid uuid", "/n: maximum: got 11, want 10"},
		},
		{
			name: "draft-07 valid",
			schema: `
$schema: http://json-schema.org/draft-07/schema#
type: object
properties:
  blob_id: {type: string, format: uuid}
`,
			value: `{"blob_id": "` + uuid + `"}`,
		},
		{
			name: "draft-04 boolean exclusiveMaximum",
			schema: `
$schema: http://json-schema.org/draft-04/schema#
properties:
  n: {type: integer, maximum: 10, exclusiveMaximum: true}
`,
			value:    `{"n": 10}`,
			problems: []string{"/n: exclusiveMaximum: got 10, want 10"},
		},
		{
			name: "draft-06 numeric exclusiveMaximum and const",
			schema: `
$schema: http://json-schema.org/draft-06/schema#
properties:
  n: {type: integer, exclusiveMaximum: 10}
  kind: {const: chapter}
`,
			value:    `{"n": 10, "kind": "book"}`,
			problems: []string{"/kind: value must be 'chapter'", "/n: exclusiveMaximum: got 10, want 10"},
		},
		{
			name: "2019-09 dependentRequired",
			schema: `
$schema: https://json-schema.org/draft/2019-09/schema
dependentRequired: {a: [b]}
`,
			value:    `{"a": 1}`,
			problems: []string{"/: properties 'b' required, if 'a' exists"},
		},
		{
			name: "local $ref and $defs",
			schema: `
$defs:
  id: {type: string, format: uuid}
type: object
properties:
  ids: {type: array, items: {$ref: "#/$defs/id"}}
`,
			value:    `{"ids": ["` + uuid + `", "bad"]}`,
			problems: []string{"/ids/1: 'bad' is not valid uuid"},
		},
		{
			name:     "pointer escaping",
			schema:   `properties: {"a/b~c": {type: string}}`,
			value:    `{"a/b~c": 1}`,
			problems: []string{"/a~1b~0c: got number, want string"},
		},
		{
			name:   "boolean schema",
			schema: `true`,
			value:  `{"anything": [1, 2]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := CompileSchema("test_schema_v1", decodeYAML(t, tt.schema))
			require.NoError(t, err)
			assert.Equal(t, "test_schema_v1", s.ID())
			err = s.Validate(decode(t, tt.value))
			if tt.problems == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			var verr *ValidationError
			require.True(t, errors.As(err, &verr), "want a *ValidationError, got %T", err)
			assert.Equal(t, "test_schema_v1", verr.SchemaID)
			require.Len(t, verr.Problems, len(tt.problems), "%q", verr.Problems)
			for i, want := range tt.problems {
				assert.True(t, strings.HasPrefix(verr.Problems[i], want), "problem %d: %q does not start with %q", i, verr.Problems[i], want)
				assert.Contains(t, err.Error(), verr.Problems[i])
			}
			assert.Contains(t, err.Error(), "test_schema_v1")
		})
	}
}

// The same value always gives the same problems in the same order.
func TestSchemaProblemsAreDeterministic(t *testing.T) {
	s, err := CompileSchema("s", decodeYAML(t, blobInputSchema))
	require.NoError(t, err)
	value := decode(t, `{"blob_id": "x", "size": -1, "ratio": 2, "owner": "x", "created_at": "x", "a": 1, "b": 2}`)
	first := s.Validate(value).(*ValidationError).Problems
	for range 20 {
		assert.Equal(t, first, s.Validate(value).(*ValidationError).Problems)
	}
}

// Values built in Go or decoded from YAML validate like their JSON form.
func TestSchemaValidateAcceptsYAMLAndGoNumbers(t *testing.T) {
	s, err := CompileSchema("s", decodeYAML(t, blobInputSchema))
	require.NoError(t, err)
	value := decodeYAML(t, "blob_id: 6ba7b810-9dad-11d1-80b4-00c04fd430c8\nschema_id: s\nsize: 5\n")
	require.NoError(t, s.Validate(value))
	require.NoError(t, s.Validate(map[string]any{"blob_id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "schema_id": "s", "size": int64(5)}))

	err = s.Validate(map[string]any{"f": func() {}})
	require.Error(t, err)
	var verr *ValidationError
	assert.False(t, errors.As(err, &verr), "a value that is not JSON is not a validation failure")
}

func TestCompileSchemaErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  any
		err  string
	}{
		{"remote http $ref", map[string]any{"$ref": "http://example.com/schema.json"}, "references to other documents are not supported"},
		{"remote https $ref", map[string]any{"properties": map[string]any{"a": map[string]any{"$ref": "https://example.com/a.json#/x"}}}, "https://example.com/a.json"},
		{"relative $ref", map[string]any{"$ref": "other.json"}, "references to other documents are not supported"},
		{"file $ref", map[string]any{"$ref": "file:///etc/passwd"}, "references to other documents are not supported"},
		{"bad local $ref", map[string]any{"$ref": "#/$defs/none"}, "$defs/none"},
		{"bad keyword value", map[string]any{"type": "bogus"}, "not a valid schema: /type"},
		{"bad minimum", map[string]any{"minimum": "ten"}, "not a valid schema: /minimum"},
		{"not an object", []any{1}, "a schema is an object or a boolean"},
		{"unknown $schema", map[string]any{"$schema": "http://example.com/my-meta"}, "example.com/my-meta"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := CompileSchema("bad_schema", tt.doc)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.err)
			assert.Contains(t, err.Error(), `compile schema "bad_schema"`)
			assert.Less(t, time.Since(start), time.Second, "nothing is fetched")
		})
	}
}

func TestSchemaConcurrentValidate(t *testing.T) {
	s, err := CompileSchema("s", decodeYAML(t, blobInputSchema))
	require.NoError(t, err)
	good := decode(t, `{"blob_id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "schema_id": "s"}`)
	bad := decode(t, `{"blob_id": "x", "schema_id": "s"}`)
	var wg sync.WaitGroup
	results := make(chan bool, 400)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				results <- s.Validate(good) == nil
				results <- s.Validate(bad) != nil
			}
		}()
	}
	wg.Wait()
	close(results)
	for ok := range results {
		require.True(t, ok)
	}
}
