-- executions: why a completed execution's output was not written on its blob
-- (events.DeltasRejected), as GET /v1/executions/{id} shows it:
-- {blob_id, blob_version, item, reason, rejected_at}; NULL when nothing was rejected.

-- +goose Up
ALTER TABLE executions ADD COLUMN deltas_rejected jsonb;

-- +goose Down
ALTER TABLE executions DROP COLUMN deltas_rejected;
