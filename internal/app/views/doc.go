// Package views reads the projections' tables (see migrations/ and projections/) for the API:
// the lists that the streams cannot answer quickly, and the blobs.
//
//	v := views.New(pool)
//	page, err := v.Executions(ctx, views.ExecutionQuery{Status: "failed", Limit: 50})
//	// page.Next, when set, is the Cursor of the next page
//
//	d, err := v.ExecutionDetail(ctx, id, seq) // ErrBehind unless the projections hold the stream up to seq
//
//	s, err := v.BlobAt(ctx, "b1", 7) // the blob at version 7: a snapshot and the deltas after it, by blob.State.Apply
//
// It only reads: the projections are the tables' one writer. A row may lag the streams by
// the projection's delay; ExecutionDetail reads the checkpoints with the rows, so that its
// caller knows.
package views
