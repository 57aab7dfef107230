-- The executions projection folds events into rows it reads back; last_seq, the stream
-- sequence of the last event folded into a row, lets an upsert refuse an event it already
-- holds, so that applying one twice changes nothing.

-- +goose Up
ALTER TABLE executions ADD COLUMN last_seq bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE executions DROP COLUMN last_seq;
