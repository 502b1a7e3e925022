-- Sources and pages: the landing page (host and path, as minimised at ingest) a key of the
-- traffic cells, and the linked visit's referrer host and landing page keys of the conversion
-- cells ('' for a player without a visit), taken when the event is linked, as the campaign is,
-- and kept on the event (NULL for events on file before this migration, as in 0014).
--
-- The cells' rows (the document's traffic and conversions) stay what they were: the cells that
-- differ only by the new keys form one group, named by `group_id` (the id of one of them). A
-- visitor's and a player's "already counted" entries (`traffic_visitors.cell_id`,
-- `measure_logs.cell_id`) name the group, not the cell, so a visitor counts once per group, in
-- the cell of their first visit of it, and the sums of a group are the row's counts as before.
-- Returns, kept per player and cell (0015, 0017), are kept on the group's cell.
--
-- A cell's unique key gains the new columns last, so a group is a prefix of it (as in 0009 and
-- 0014 the table is rebuilt; cells keep their ids, each its own group).

ALTER TABLE measure_logs ADD COLUMN referrer_host TEXT;
ALTER TABLE measure_logs ADD COLUMN page_host TEXT;
ALTER TABLE measure_logs ADD COLUMN page_path TEXT;

CREATE TABLE traffic_cells_new (
    id               INTEGER PRIMARY KEY,
    day              TEXT    NOT NULL,   -- UTC, YYYY-MM-DD
    game             TEXT    NOT NULL,
    source           TEXT    NOT NULL,
    medium           TEXT    NOT NULL,
    campaign         TEXT    NOT NULL,
    content          TEXT    NOT NULL,
    term             TEXT    NOT NULL,
    channel          TEXT    NOT NULL,
    referrer_host    TEXT    NOT NULL,
    device           TEXT    NOT NULL,
    country          TEXT    NOT NULL,
    page_host        TEXT    NOT NULL DEFAULT '',
    page_path        TEXT    NOT NULL DEFAULT '',
    group_id         INTEGER NOT NULL DEFAULT 0,
    visits           INTEGER NOT NULL DEFAULT 0,
    visitors         INTEGER NOT NULL DEFAULT 0,
    consented_visits INTEGER NOT NULL DEFAULT 0,
    UNIQUE (day, game, source, medium, campaign, content, term, channel, referrer_host, device,
            country, page_host, page_path)
);
INSERT INTO traffic_cells_new (id, day, game, source, medium, campaign, content, term, channel,
                               referrer_host, device, country, page_host, page_path, group_id,
                               visits, visitors, consented_visits)
    SELECT id, day, game, source, medium, campaign, content, term, channel, referrer_host,
           device, country, '', '', id, visits, visitors, consented_visits
    FROM traffic_cells;
DROP TABLE traffic_cells;
ALTER TABLE traffic_cells_new RENAME TO traffic_cells;

CREATE TABLE conversion_cells_new (
    id          INTEGER PRIMARY KEY,
    day         TEXT    NOT NULL,        -- UTC day of the event's time
    game        TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    medium      TEXT    NOT NULL,
    campaign    TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    term        TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    platform    TEXT    NOT NULL,
    storefront  TEXT    NOT NULL,
    country     TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    referrer_host TEXT  NOT NULL DEFAULT '',
    page_host   TEXT    NOT NULL DEFAULT '',
    page_path   TEXT    NOT NULL DEFAULT '',
    group_id    INTEGER NOT NULL DEFAULT 0,
    events      INTEGER NOT NULL DEFAULT 0,
    users       INTEGER NOT NULL DEFAULT 0,
    returned_d1 INTEGER NOT NULL DEFAULT 0,
    returned_d7 INTEGER NOT NULL DEFAULT 0,
    UNIQUE (day, game, source, medium, campaign, content, term, channel, platform, storefront,
            country, event, referrer_host, page_host, page_path)
);
INSERT INTO conversion_cells_new (id, day, game, source, medium, campaign, content, term,
                                  channel, platform, storefront, country, event, referrer_host,
                                  page_host, page_path, group_id, events, users, returned_d1,
                                  returned_d7)
    SELECT id, day, game, source, medium, campaign, content, term, channel, platform,
           storefront, country, event, '', '', '', id, events, users, returned_d1, returned_d7
    FROM conversion_cells;
DROP TABLE conversion_cells;
ALTER TABLE conversion_cells_new RENAME TO conversion_cells;
