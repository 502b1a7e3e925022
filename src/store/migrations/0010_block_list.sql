-- A forget request also blocks the player from being recorded again, as the TRACKS GDPR Forget
-- API does: their later events are answered as accepted and dropped. The list holds keyed
-- BLAKE3 hashes of (game id, user id), never the id, under a key of its own: no salt keys it,
-- so neither a rotation nor the retention purge lifts a block; only `unforget` does. The key is
-- made at the store's first open after this migration, from the OS random source (Rust's,
-- which fails loudly; SQLite's randomblob() falls back to the time and pid without
-- /dev/urandom), and is never replaced: a new key would lift every block at once.
CREATE TABLE block_key (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    key  BLOB    NOT NULL CHECK (length(key) = 32)
);

CREATE TABLE blocked_users (
    hash  BLOB PRIMARY KEY CHECK (length(hash) = 16)
) WITHOUT ROWID;
