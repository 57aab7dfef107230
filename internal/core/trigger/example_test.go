package trigger_test

import (
	"fmt"
	"time"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/core/trigger"
)

// A chapter created starts the chapter workflow of a book-writer provider.
func ExampleMatch() {
	p, err := definitions.ParseProvider("book-writer.yaml", []byte(`
provider: {id: book-writer}
workflows:
  - workflow_id: book_chapter_processing
    priority: 10
    triggers:
      - event: onCreate
        conditions: [{field: metadata.type, operator: eq, value: chapter}]
`))
	if err != nil {
		panic(err)
	}
	ev, err := blob.Parse(blob.Message{Subject: "memmie.blobs.b1.created",
		Body: []byte(`{"blob_id": "b1", "user_id": "u1", "metadata": {"type": "chapter"}}`), MsgID: "e1"})
	if err != nil {
		panic(err)
	}
	var s blob.State
	dec, err := blob.Decide(s, ev, time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC))
	if err != nil {
		panic(err)
	}
	if err := s.Apply(dec.Delta); err != nil {
		panic(err)
	}
	starts, err := trigger.Match([]*definitions.Provider{p}, ev, s, trigger.Config{})
	if err != nil {
		panic(err)
	}
	for _, st := range starts {
		fmt.Println(st.WorkflowID, st.Priority, st.Trigger, st.BaseVersion, st.ExecutionID == trigger.ExecutionID("b1", "e1", "book-writer", st.WorkflowID))
	}
	// Output:
	// book_chapter_processing 10 workflows[0].triggers[0] 1 true
}
