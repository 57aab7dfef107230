-- The blobs projection (MEMMIE_DELTAS): each blob's current document, and every version of it,
-- one row per delta. Rebuildable from the stream like every projection table.
--
-- Documents and values are json, not jsonb: json keeps the bytes it is given, so the rows hold
-- the canonical bytes that blob.Fold gives (jsonb would reorder keys and rewrite numbers), and
-- it takes the \u0000 escapes that jsonb refuses.

-- +goose Up

-- One row per blob: its document as of its last delta (blob.State).
CREATE TABLE blobs (
    blob_id       text        PRIMARY KEY,
    user_id       text,                          -- the owner: user_id of its created event
    version       bigint      NOT NULL,
    content       json        NOT NULL,          -- any JSON; 'null' when it has none
    metadata      json        NOT NULL,          -- a JSON object
    deleted       bool        NOT NULL DEFAULT false,
    derived_from  json,                          -- {blob_id, execution_id, depth} of a derived blob
    derived       json        NOT NULL DEFAULT '[]', -- the blobs derived from it, in order
    last_delta_id text        NOT NULL,
    last          json        NOT NULL DEFAULT '{}', -- the last delta's lineage (its metadata)
    seq           bigint      NOT NULL,          -- the stream sequence of its last delta
    created_at    timestamptz NOT NULL,          -- the create delta's timestamp
    updated_at    timestamptz NOT NULL           -- the last delta's timestamp
);

-- One row per delta, in version order per blob: the delta with its lineage. Every
-- projections.BlobSnapshotEvery versions (and at version 1) the row also holds the blob's
-- whole state at that version, so that the document at any version is one snapshot and fewer
-- than that many deltas away.
CREATE TABLE blob_versions (
    blob_id           text        NOT NULL,
    version           bigint      NOT NULL,
    delta_id          text        NOT NULL,
    base_version      bigint      NOT NULL,
    type              text        NOT NULL,
    path              text,
    from_path         text,                      -- the source pointer of a move or copy
    old_value         json,
    new_value         json,
    provider_id       text,
    workflow_id       text,
    workflow_revision int,
    execution_id      text,
    step_id           text,
    source_event_id   text,
    lineage           json        NOT NULL DEFAULT '{}', -- the delta's metadata, whole
    timestamp         timestamptz NOT NULL,
    seq               bigint      NOT NULL,      -- its stream sequence
    snapshot          json,                      -- the blob's state at this version, or NULL
    PRIMARY KEY (blob_id, version)
);
-- The deltas an execution wrote.
CREATE INDEX blob_versions_execution ON blob_versions (execution_id) WHERE execution_id IS NOT NULL;
-- The nearest snapshot at or below a version.
CREATE INDEX blob_versions_snapshots ON blob_versions (blob_id, version) WHERE snapshot IS NOT NULL;

-- +goose Down
DROP TABLE blob_versions;
DROP TABLE blobs;
