package eval_test

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/memmie/memmie/definitions/eval"
)

// scope is what the engine builds for a step: the execution input and the finished steps.
func scope() map[string]any {
	var s map[string]any
	_ = json.Unmarshal([]byte(`{
		"input": {"blob_id": "b-1"},
		"steps": {"load_chapter": {"status": "succeeded",
			"output": {"content": "Once upon a time", "metadata": {"chapter_number": 7}}}}
	}`), &s)
	return s
}

func ExampleCompileMapping() {
	m, err := eval.CompileMapping(map[string]any{
		"parent_id": "$.input.blob_id",
		"prompt":    "Expand chapter {$.steps.load_chapter.output.metadata.chapter_number}: {$.steps.load_chapter.output.content}",
		"model":     "gpt-4",
		"missing":   "$.steps.skipped.output.text",
	})
	if err != nil {
		panic(err)
	}
	out, err := m.Eval(scope())
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	fmt.Println(eval.StepRefs(m.Refs()))
	// Output:
	// {"missing":null,"model":"gpt-4","parent_id":"b-1","prompt":"Expand chapter 7: Once upon a time"}
	// [skipped load_chapter]
}

func ExampleCompileCondition() {
	c, err := eval.CompileCondition(`$.steps.load_chapter.status == "succeeded" && $.steps.load_chapter.output.metadata.chapter_number > 5`)
	if err != nil {
		panic(err)
	}
	ok, err := c.Eval(scope())
	fmt.Println(ok, err)

	// A step that did not run has no output: its fields are nil, not an error.
	c, _ = eval.CompileCondition("$.steps.validate.output.valid == true")
	ok, err = c.Eval(scope())
	fmt.Println(ok, err)
	// Output:
	// true <nil>
	// false <nil>
}

func ExampleCompilePathTemplate() {
	endpoint, err := eval.CompilePathTemplate("/blobs/{blob_id}/children")
	if err != nil {
		panic(err)
	}
	fmt.Println(endpoint.Params())
	path, err := endpoint.Expand(map[string]any{"blob_id": "a/b c"})
	fmt.Println(path, err)
	_, err = endpoint.Expand(map[string]any{})
	fmt.Println(err)
	// Output:
	// [blob_id]
	// /blobs/a%2Fb%20c/children <nil>
	// endpoint /blobs/{blob_id}/children: parameter "blob_id" is missing from the input
}

func ExampleSchema_Validate() {
	s, err := eval.CompileSchema("blob_input_schema_v1", map[string]any{
		"type":     "object",
		"required": []any{"blob_id"},
		"properties": map[string]any{
			"blob_id": map[string]any{"type": "string", "format": "uuid"},
		},
	})
	if err != nil {
		panic(err)
	}
	var input any
	_ = json.Unmarshal([]byte(`{"blob_id": "x"}`), &input)
	err = s.Validate(input)
	var verr *eval.ValidationError
	if errors.As(err, &verr) {
		fmt.Println(verr.Problems)
	}
	// Output:
	// [/blob_id: 'x' is not valid uuid: must have 5 elements]
}
