-- executions: GET /v1/executions and /ui/executions filter by provider and by blob too; these
-- indexes serve those pages as executions_status and executions_workflow serve theirs (newest
-- first, the (queued_at, execution_id) cursor), instead of a walk of executions_newest that
-- skips every row of another provider or blob. Partial: executions started through the API
-- have neither, and an equality filter implies NOT NULL.

-- +goose Up
CREATE INDEX executions_provider ON executions (provider_id, queued_at DESC, execution_id DESC)
    WHERE provider_id IS NOT NULL;
CREATE INDEX executions_blob ON executions (blob_id, queued_at DESC, execution_id DESC)
    WHERE blob_id IS NOT NULL;

-- +goose Down
DROP INDEX executions_blob;
DROP INDEX executions_provider;
