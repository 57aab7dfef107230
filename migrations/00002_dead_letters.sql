-- dead_letters: whether the original message was cut when it was recorded (a redrive refuses
-- those: the original bytes are gone), and GET /v1/deadletter?source= newest first.

-- +goose Up
ALTER TABLE dead_letters ADD COLUMN truncated bool NOT NULL DEFAULT false;
CREATE INDEX dead_letters_source ON dead_letters (source, recorded_at DESC, id DESC);

-- +goose Down
DROP INDEX dead_letters_source;
ALTER TABLE dead_letters DROP COLUMN truncated;
