-- What left the server: one row per signed aggregates document (a push, a pull, an export),
-- per key rotation, and one anchor for the rows pruned after `ledger.retention_days`. Each row
-- holds the hash of the row before it (`prev_hash`) and its own (`row_hash`), so an edited,
-- inserted or deleted row breaks the chain. No personal data: destinations are URLs and token
-- names, documents are aggregates.
CREATE TABLE ledger (
    seq           INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    destination   TEXT    NOT NULL,
    range_from    TEXT    NOT NULL,
    range_to      TEXT    NOT NULL,
    document_hash BLOB,
    size          INTEGER NOT NULL,
    public_key    BLOB    NOT NULL,
    signature     BLOB    NOT NULL,
    -- A rotation: the new key, and its signature of the same statement.
    new_key       BLOB,
    cosignature   BLOB,
    prev_hash     BLOB    NOT NULL,
    row_hash      BLOB    NOT NULL,
    -- The document itself, with `ledger.keep_documents`.
    document      BLOB
);

-- A queued push carries what its headers say: the signature and the row before its own.
ALTER TABLE outbox ADD COLUMN signature BLOB;
ALTER TABLE outbox ADD COLUMN ledger_prev BLOB;
ALTER TABLE outbox ADD COLUMN public_key BLOB;
