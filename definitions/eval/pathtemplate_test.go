package eval

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCompilePathTemplate(t *testing.T) {
	tests := []struct {
		src    string
		params []string
		err    string
	}{
		{src: "/", params: nil},
		{src: "/blobs", params: nil},
		{src: "/blobs/validate", params: nil},
		{src: "/blobs/{blob_id}", params: []string{"blob_id"}},
		{src: "/a/{x}/b/{y}/{x}", params: []string{"x", "y"}},
		{src: "/v{version}/items/{id}.json", params: []string{"version", "id"}},
		{src: "/a/%20b/{_id}", params: []string{"_id"}},
		{src: "/users/me@x:1;a=b,c~d", params: nil},
		{src: "/a/.hidden/b..c", params: nil},

		{src: "", err: "empty endpoint"},
		{src: "blobs/{id}", err: `must start with "/"`},
		{src: "http://evil.example/x", err: "not an absolute URL"},
		{src: "https://evil.example", err: "not an absolute URL"},
		{src: "//evil.example/x", err: `must not start with "//"`},
		{src: "/a/../b", err: `dot segment ".."`},
		{src: "/a/..", err: `dot segment ".."`},
		{src: "/a/./b", err: `dot segment "."`},
		{src: "/a/%2e%2e/b", err: `dot segment "%2e%2e"`},
		{src: "/a/.%2E/b", err: `dot segment ".%2E"`},
		{src: "/a/%2E", err: `dot segment "%2E"`},
		{src: "/a?x=1", err: "query strings"},
		{src: "/a#frag", err: "query strings and fragments"},
		{src: "/a/{b", err: `unclosed "{"`},
		{src: "/a/b}", err: `"}" without "{"`},
		{src: "/a/{}", err: "bad parameter name"},
		{src: "/a/{1x}", err: "bad parameter name"},
		{src: "/a/{x-y}", err: "bad parameter name"},
		{src: "/a/{$.input.x}", err: "bad parameter name"},
		{src: "/a b", err: "not allowed in a URL path"},
		{src: `/a\b`, err: "not allowed in a URL path"},
		{src: "/a/%zz", err: "bad percent-encoding"},
		{src: "/a/%4", err: "bad percent-encoding"},
		{src: "/" + strings.Repeat("a", MaxSourceLen), err: "longer than"},
	}
	for _, tt := range tests {
		name := tt.src
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			pt, err := CompilePathTemplate(tt.src)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				assert.Contains(t, err.Error(), "compile endpoint")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.params, pt.Params())
			assert.Equal(t, tt.src, pt.String())
		})
	}
}

func TestPathTemplateExpand(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		input string // JSON, decoded as the engine decodes a resolved input
		want  string
		err   string
	}{
		{name: "no params", src: "/blobs", input: `{}`, want: "/blobs"},
		{name: "string", src: "/blobs/{blob_id}", input: `{"blob_id": "b-1"}`, want: "/blobs/b-1"},
		{name: "escapes slash and space", src: "/blobs/{blob_id}", input: `{"blob_id": "a/b c"}`, want: "/blobs/a%2Fb%20c"},
		{name: "escapes query and fragment", src: "/q/{x}", input: `{"x": "a?b#c"}`, want: "/q/a%3Fb%23c"},
		{name: "escapes percent", src: "/q/{x}", input: `{"x": "%2e%2e"}`, want: "/q/%252e%252e"},
		{name: "unicode", src: "/q/{x}", input: `{"x": "héllo"}`, want: "/q/h%C3%A9llo"},
		{name: "integer", src: "/chapters/{n}", input: `{"n": 7}`, want: "/chapters/7"},
		{name: "big integer without exponent", src: "/n/{n}", input: `{"n": 1e21}`, want: "/n/1000000000000000000000"},
		{name: "fraction", src: "/n/{n}", input: `{"n": 2.5}`, want: "/n/2.5"},
		{name: "negative", src: "/n/{n}", input: `{"n": -3}`, want: "/n/-3"},
		{name: "bool", src: "/f/{f}", input: `{"f": false}`, want: "/f/false"},
		{name: "repeated and partial", src: "/v{v}/{id}/{id}.json", input: `{"v": 2, "id": "x"}`, want: "/v2/x/x.json"},
		{name: "dots inside a segment", src: "/f/{name}", input: `{"name": "a..b"}`, want: "/f/a..b"},
		{name: "extra input ignored", src: "/f/{a}", input: `{"a": "1", "b": {"c": 1}}`, want: "/f/1"},

		{name: "missing", src: "/blobs/{blob_id}", input: `{}`, err: `parameter "blob_id" is missing`},
		{name: "null", src: "/blobs/{blob_id}", input: `{"blob_id": null}`, err: `parameter "blob_id" is missing`},
		{name: "empty", src: "/blobs/{blob_id}", input: `{"blob_id": ""}`, err: `parameter "blob_id" is empty`},
		{name: "object", src: "/blobs/{blob_id}", input: `{"blob_id": {"a": 1}}`, err: `parameter "blob_id" is an object`},
		{name: "list", src: "/blobs/{blob_id}", input: `{"blob_id": [1]}`, err: `parameter "blob_id" is a list`},
		{name: "dot-dot value", src: "/blobs/{blob_id}", input: `{"blob_id": ".."}`, err: `dot segment ".."`},
		{name: "dot value", src: "/blobs/{blob_id}/x", input: `{"blob_id": "."}`, err: `dot segment "."`},
		{name: "dot-dot made of two params", src: "/a/{x}{y}", input: `{"x": ".", "y": "."}`, err: `dot segment ".."`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt, err := CompilePathTemplate(tt.src)
			require.NoError(t, err)
			var input map[string]any
			require.NoError(t, json.Unmarshal([]byte(tt.input), &input))
			got, err := pt.Expand(input)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				assert.Contains(t, err.Error(), tt.src)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// Inputs built in Go rather than decoded from JSON carry other number types.
func TestPathTemplateExpandGoNumbers(t *testing.T) {
	pt, err := CompilePathTemplate("/{a}/{b}/{c}/{d}")
	require.NoError(t, err)
	got, err := pt.Expand(map[string]any{"a": 1, "b": int64(-2), "c": uint64(3), "d": json.Number("12345678901234567890")})
	require.NoError(t, err)
	assert.Equal(t, "/1/-2/3/12345678901234567890", got)
}

func TestPathTemplateParamsIsACopy(t *testing.T) {
	pt, err := CompilePathTemplate("/{a}/{b}")
	require.NoError(t, err)
	p := pt.Params()
	p[0] = "changed"
	assert.Equal(t, []string{"a", "b"}, pt.Params())
}
