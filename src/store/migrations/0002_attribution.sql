-- Attribution and daily roll-ups.
--
-- A game event is linked when it arrives to the visit that brought it (same IP pseudonym under
-- any live salt, inside the lookback window) and carries that visit's campaign from then on;
-- `source` is '(direct)' when no visit matched.
--
-- The *_cells tables are the aggregates document, kept current by the writer in the same
-- transaction as each record, so a 30-day document reads thousands of cells instead of tens of
-- millions of rows. The *_visitors / *_users tables hold which pseudonyms a cell has counted,
-- for its distinct counts. In cell keys '' stands for "none", so unique keys treat it as a value.

ALTER TABLE measure_logs ADD COLUMN source TEXT;
ALTER TABLE measure_logs ADD COLUMN medium TEXT;
ALTER TABLE measure_logs ADD COLUMN campaign TEXT;
ALTER TABLE measure_logs ADD COLUMN content TEXT;
ALTER TABLE measure_logs ADD COLUMN term TEXT;

-- Linking looks visits up by pseudonym and time.
DROP INDEX collect_logs_ip;
CREATE INDEX collect_logs_ip ON collect_logs (ip_hash, ip_salt_id, received_at);
CREATE INDEX collect_logs_view ON collect_logs (view_id) WHERE view_id IS NOT NULL;
CREATE INDEX measure_logs_visit ON measure_logs (visit_id) WHERE visit_id IS NOT NULL;

CREATE TABLE traffic_cells (
    id               INTEGER PRIMARY KEY,
    day              TEXT    NOT NULL,   -- UTC, YYYY-MM-DD
    game             TEXT    NOT NULL,
    source           TEXT    NOT NULL,
    medium           TEXT    NOT NULL,
    campaign         TEXT    NOT NULL,
    content          TEXT    NOT NULL,
    term             TEXT    NOT NULL,
    referrer_host    TEXT    NOT NULL,
    device           TEXT    NOT NULL,
    visits           INTEGER NOT NULL DEFAULT 0,
    visitors         INTEGER NOT NULL DEFAULT 0,
    consented_visits INTEGER NOT NULL DEFAULT 0,
    UNIQUE (day, game, source, medium, campaign, content, term, referrer_host, device)
);

CREATE TABLE traffic_visitors (
    cell_id  INTEGER NOT NULL,
    ip_hash  BLOB    NOT NULL,
    PRIMARY KEY (cell_id, ip_hash)
) WITHOUT ROWID;

CREATE TABLE conversion_cells (
    id          INTEGER PRIMARY KEY,
    day         TEXT    NOT NULL,        -- UTC day of the event's time
    game        TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    medium      TEXT    NOT NULL,
    campaign    TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    term        TEXT    NOT NULL,
    platform    TEXT    NOT NULL,
    storefront  TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    events      INTEGER NOT NULL DEFAULT 0,
    users       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (day, game, source, medium, campaign, content, term, platform, storefront, event)
);

CREATE TABLE conversion_users (
    cell_id    INTEGER NOT NULL,
    user_hash  BLOB    NOT NULL,
    PRIMARY KEY (cell_id, user_hash)
) WITHOUT ROWID;
