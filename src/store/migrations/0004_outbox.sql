-- Aggregates documents on their way to the central platform. A document is written here before
-- its first attempt and deleted only after a 2xx, so neither an outage nor a restart loses it;
-- every attempt sends the same body with the same idempotency key.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    day              TEXT    NOT NULL,      -- the UTC day the document covers
    idempotency_key  TEXT    NOT NULL UNIQUE,
    body             BLOB    NOT NULL,      -- the JSON document, byte for byte as sent
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    rejected_at      INTEGER               -- refused for good (a 4xx): kept to be seen, not retried
);
CREATE INDEX outbox_pending ON outbox (id) WHERE rejected_at IS NULL;

-- What was last queued for each day, as a hash of the document's content, so a push renders
-- every day but queues only those that changed.
CREATE TABLE pushed_days (
    day        TEXT    PRIMARY KEY,
    content    BLOB    NOT NULL,
    queued_at  INTEGER NOT NULL,
    acked_at   INTEGER
) WITHOUT ROWID;
