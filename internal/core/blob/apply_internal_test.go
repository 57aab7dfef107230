package blob

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// wholeDocument applies the operation to the whole document, as apply does when it cannot
// patch one member alone.
func wholeDocument(o operation, d document) (document, error) {
	if o.Op == opMove && o.From == o.Path {
		return o.apply(d) // not the library's (see apply)
	}
	return o.patchDocument(d)
}

// FuzzApplyMember checks that patching one member alone gives what patching the whole
// document gives: the same document, or an error from both.
func FuzzApplyMember(f *testing.F) {
	for _, c := range [][2]string{
		{`{"op": "add", "path": "/metadata/a", "value": 1}`, `{"content": {"x": [1, 2]}, "metadata": {"b": 2}}`},
		{`{"op": "remove", "path": "/content/x/0"}`, `{"content": {"x": [1, 2]}, "metadata": {}}`},
		{`{"op": "move", "from": "/content/x", "path": "/content/y"}`, `{"content": {"x": [1, 2]}, "metadata": {}}`},
		{`{"op": "copy", "from": "/metadata/b", "path": "/metadata/c"}`, `{"content": null, "metadata": {"b": {"d": 1}}}`},
		{`{"op": "replace", "path": "/content/0", "value": "z"}`, `{"content": ["a"], "metadata": {}}`},
		{`{"op": "test", "path": "/metadata/", "value": 1}`, `{"content": 1, "metadata": {"": 1}}`},
		{`{"op": "add", "path": "/content/-", "value": 1}`, `{"content": [], "metadata": {}}`},
		{`{"op": "remove", "path": "/metadata/a/b"}`, `{"content": [], "metadata": {"a": "s"}}`},
	} {
		f.Add([]byte(c[0]), []byte(c[1]))
	}
	f.Fuzz(func(t *testing.T, rawOp, rawDoc []byte) {
		o, err := decodeOperation(rawOp)
		if err != nil {
			return
		}
		d, err := parseDocument(rawDoc)
		if err != nil {
			return
		}
		got, err := o.apply(d)
		want, wantErr := wholeDocument(o, d)
		if wantErr != nil {
			require.Error(t, err, "the whole document refuses %s", rawOp)
			return
		}
		require.NoError(t, err, "%s", rawOp)
		require.Equal(t, want, got)
	})
}
