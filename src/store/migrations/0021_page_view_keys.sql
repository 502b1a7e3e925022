-- A page view is found by a 16-byte hash of its id (`ViewKey`), never the id itself. Its entry
-- is keyed at a random place of `page_views`, so the writer holds the newest in memory and
-- writes them later in key order (store/deferred.rs). `page_view_keys` is their durable record,
-- appended with the visit (its key is the visit's id): at start the entries of the visits
-- after `through` are made again from it. Both live for the hour a consent update may come in.
CREATE TABLE page_view_keys (
    visit_id    INTEGER PRIMARY KEY,
    view_key    BLOB    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE page_views_by_key (
    view_key    BLOB    NOT NULL,
    ip_hash     BLOB    NOT NULL,
    ip_salt_id  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    visit_id    INTEGER NOT NULL,
    PRIMARY KEY (view_key, ip_hash, ip_salt_id, received_at, visit_id)
) WITHOUT ROWID;
INSERT INTO deferred_written (name, through)
    SELECT 'page_views', coalesce(max(id), 0) FROM collect_logs;
-- The views on file move with their ids hashed (store/migrate.rs, `hash_view_ids`), then:
-- DROP TABLE page_views; ALTER TABLE page_views_by_key RENAME TO page_views;
