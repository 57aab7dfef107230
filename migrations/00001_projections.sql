-- The projections' tables. Each is a view of the streams, written by one projection and
-- rebuildable from the streams at any time: never the source of truth, never written by hand.

-- +goose Up

-- Written by the queued_executions projection (MEMMIE_EXECUTIONS): one row per queued
-- execution, from its queuing to its end; its automatic re-runs count in retry_count. The
-- columns of the design notes' QueuedExecution, plus what memmie knows of an execution;
-- metadata holds the provider and the trigger, when there is one.
CREATE TABLE queued_executions (
    id                uuid        PRIMARY KEY,
    execution_id      uuid        NOT NULL,
    workflow_id       text        NOT NULL,
    workflow_revision int         NOT NULL,
    priority          int         NOT NULL DEFAULT 0,
    status            text        NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    retry_count       int         NOT NULL DEFAULT 0,
    max_retries       int         NOT NULL DEFAULT 0,
    provider_id       text,
    trigger           text,
    blob_id           text,
    queued_at         timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    metadata          jsonb       NOT NULL DEFAULT '{}'
);
-- What runs next: the pending ones, highest priority first, oldest first.
CREATE INDEX queued_executions_next ON queued_executions (status, priority DESC, queued_at);
CREATE INDEX queued_executions_execution ON queued_executions (execution_id);
CREATE INDEX queued_executions_workflow ON queued_executions (workflow_id, queued_at DESC);

-- Written by the executions projection (MEMMIE_EXECUTIONS): one row per execution, as of its
-- latest run.
CREATE TABLE executions (
    execution_id      uuid        PRIMARY KEY,
    workflow_id       text        NOT NULL,
    workflow_revision int         NOT NULL,
    status            text        NOT NULL,
    priority          int         NOT NULL DEFAULT 0,
    input             jsonb,
    output            jsonb,
    error             jsonb,
    run               int         NOT NULL DEFAULT 0,
    provider_id       text,
    blob_id           text,
    queued_at         timestamptz NOT NULL,
    started_at        timestamptz,
    ended_at          timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- GET /v1/executions: newest first, by status or workflow; execution_id breaks ties for the cursor.
CREATE INDEX executions_newest ON executions (queued_at DESC, execution_id DESC);
CREATE INDEX executions_status ON executions (status, queued_at DESC, execution_id DESC);
CREATE INDEX executions_workflow ON executions (workflow_id, queued_at DESC, execution_id DESC);

-- Written by the execution_steps projection (MEMMIE_EXECUTIONS): one row per attempt of a
-- step in a run, compensations apart.
CREATE TABLE execution_steps (
    execution_id uuid        NOT NULL,
    run          int         NOT NULL,
    step_id      text        NOT NULL,
    attempt      int         NOT NULL,
    compensation bool        NOT NULL DEFAULT false,
    status       text        NOT NULL,
    request      jsonb,      -- a summary of the request (method, URL, sizes), not its body
    output       jsonb,
    error        jsonb,
    duration_ms  bigint,
    started_at   timestamptz,
    ended_at     timestamptz,
    PRIMARY KEY (execution_id, run, step_id, attempt, compensation)
);

-- Written by the definitions projection (MEMMIE_DEFINITIONS): every revision of every schema,
-- workflow and provider; current marks the newest revision, active that it has not been
-- deactivated.
CREATE TABLE definitions (
    kind          text        NOT NULL CHECK (kind IN ('schema', 'workflow', 'provider')),
    id            text        NOT NULL,
    revision      int         NOT NULL,
    current       bool        NOT NULL DEFAULT false,
    active        bool        NOT NULL DEFAULT true,
    canonical     jsonb       NOT NULL,
    registered_at timestamptz NOT NULL,
    PRIMARY KEY (kind, id, revision)
);
-- At most one current revision per definition.
CREATE UNIQUE INDEX definitions_current ON definitions (kind, id) WHERE current;

-- Written by the dead_letters projection (MEMMIE_DEADLETTER): what could not be processed,
-- with the original message, so that it can be read and redriven.
CREATE TABLE dead_letters (
    id          text        PRIMARY KEY,
    source      text        NOT NULL,  -- the handler that gave up on it
    reason      text        NOT NULL,
    subject     text        NOT NULL,  -- the original subject, where a redrive sends it
    headers     jsonb       NOT NULL DEFAULT '{}',
    data        bytea,
    stream      text,                  -- where the original message was stored, if it was
    stream_seq  bigint,
    recorded_at timestamptz NOT NULL,
    redriven_at timestamptz
);
CREATE INDEX dead_letters_recorded ON dead_letters (recorded_at DESC, id DESC);

-- Written by every projection, in the transaction of the rows it applied: the last stream
-- sequence each projection has applied, where it resumes.
CREATE TABLE projection_checkpoints (
    projection text        NOT NULL,
    stream     text        NOT NULL,
    last_seq   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream)
);

-- +goose Down
DROP TABLE projection_checkpoints;
DROP TABLE dead_letters;
DROP TABLE definitions;
DROP TABLE execution_steps;
DROP TABLE executions;
DROP TABLE queued_executions;
