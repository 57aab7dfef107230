package eval

import "testing"

func BenchmarkConditionEval(b *testing.B) {
	scope := decode(b, scopeJSON)
	c, err := CompileCondition("$.steps.validate_blob.output.valid == true && $.input.n > 2 && $.input.meta.type in ['chapter', 'book']")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		ok, err := c.Eval(scope)
		if err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkMappingEval(b *testing.B) {
	scope := decode(b, scopeJSON)
	m, err := CompileMapping(decodeYAML(b, `
parent_id: $.input.blob_id
content: $.steps.load_chapter.output.content
prompt: "Expand chapter {$.steps.load_chapter.output.metadata.chapter_number}: {$.steps.load_chapter.output.content}"
metadata:
  type: expanded_chapter
  original_id: $.input.blob_id
  score: $.steps.validate_blob.output.score
  tags: $.input.tags
model: gpt-4
max_tokens: 3000
`))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Eval(scope); err != nil {
			b.Fatal(err)
		}
	}
}
